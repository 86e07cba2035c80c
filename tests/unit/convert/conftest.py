"""Fixtures for the converter tests: tiny datasets and a fresh work folder per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder for ``model.onnx``; tmp_path/work."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any, Any, Any]:
    """Iris split into (x_train, x_test, y_train, y_test), float32 features."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y
    )
    return x_tr, x_te, y_tr, y_te


@pytest.fixture(scope="session")
def diabetes() -> tuple[Any, Any, Any, Any]:
    """Diabetes regression data split into (x_train, x_test, y_train, y_test)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    return tuple(train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0))


@pytest.fixture
def ort_run() -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """Outputs of an ONNX file by name, through plain onnxruntime (no shipyard code)."""
    import onnxruntime as ort

    def run(path: Path, feed: dict[str, Any]) -> dict[str, Any]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    return run
