from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, Lineage, NewVersion, Signature, TensorSpec


def tiny_new(lineage: Lineage | None = None) -> NewVersion:
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    return NewVersion(signature=sig, framework="onnx", lineage=lineage or Lineage())


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    """A registry in the test's own SHIPYARD_HOME (registry.db + store/)."""
    reg = ModelRegistry.open(settings)
    yield reg
    reg.close()


@pytest.fixture
def files(tiny_onnx: Path) -> dict[str, Path]:
    return {"model.onnx": tiny_onnx}
