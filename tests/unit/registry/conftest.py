"""Fixtures for registry tests: a real SQLite registry and small model files under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, Lineage, NewVersion, Signature, TensorSpec


def tiny_new(lineage: Lineage | None = None) -> NewVersion:
    """A NewVersion for the 4-in, 2-out tiny model, optionally derived."""
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    return NewVersion(signature=sig, framework="onnx", lineage=lineage or Lineage())


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    """A registry in the test's own SHIPYARD_HOME.

    Tree::

        <home>/registry.db            SQLite metadata (WAL)
        <home>/store/blobs/sha256/    content-addressed blobs
        <home>/store/tmp/             staging
    """
    reg = ModelRegistry.open(settings)
    yield reg
    reg.close()


@pytest.fixture
def files(tiny_onnx: Path) -> dict[str, Path]:
    """The role -> path mapping of the tiny ONNX model."""
    return {"model.onnx": tiny_onnx}


@pytest.fixture
def other_onnx(tmp_path: Path, tiny_onnx: Path) -> Path:
    """A second model file whose content (and so blob) differs from ``tiny_onnx``."""
    path = tmp_path / "other.onnx"
    path.write_bytes(tiny_onnx.read_bytes() + b"\0")
    return path


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """A stand-in for an original (pre-conversion) artifact."""
    path = tmp_path / "model.pkl"
    path.write_bytes(b"original model bytes")
    return path
