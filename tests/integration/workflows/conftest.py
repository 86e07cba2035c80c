"""A registry with the tiny linear model (y = x·W + b, x: FP32 (N, 4)) registered as `tiny:1`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec
from shipyard.testing import save_tiny_onnx_model


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    """A registry in the test's own SHIPYARD_HOME (registry.db + store/)."""
    reg = ModelRegistry.open(settings)
    yield reg
    reg.close()


@pytest.fixture
def tiny(registry: ModelRegistry, tmp_path: Path) -> str:
    """Registers `tiny:1` (x: FP32 (N, 4) -> y: FP32 (N, 2)) and returns its ref."""
    path = save_tiny_onnx_model(tmp_path / "tiny.onnx")
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    mv = registry.register(
        "tiny",
        NewVersion(signature=sig, task=TaskSchema(task=TaskType.OTHER), framework="onnx"),
        {"model.onnx": path},
    )
    return mv.ref
