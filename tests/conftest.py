"""Shared fixtures. Per-package fixtures live in the conftest.py of their own folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard.config import Settings, load_settings
from shipyard.testing import save_tiny_onnx_model

_SCRUB_PREFIXES = ("SHIPYARD_", "OMP_", "CUDA_VISIBLE_DEVICES", "KERAS_BACKEND")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop SHIPYARD_* and provider variables; point SHIPYARD_HOME at a fresh folder."""
    for key in list(os.environ):
        if key.startswith(_SCRUB_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_BACKEND", "torch")


@pytest.fixture
def seed() -> int:
    """A random seed; set SHIPYARD_TEST_SEED to reproduce a run (tests pass for any seed)."""
    return int(os.environ.get("SHIPYARD_TEST_SEED_FIXED", "0")) or 42


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The SHIPYARD_HOME of this test (created lazily by the registry)."""
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings rooted in the test's own home, no config file."""
    return load_settings({"home": str(home)})


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """A 4-feature → 2-output linear ONNX model file (y = x·W + b), built in code."""
    return save_tiny_onnx_model(tmp_path / "tiny.onnx")
