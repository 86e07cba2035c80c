from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec

FEATURES = ("f0", "f1", "f2", "f3")


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    """A registry in the test's own SHIPYARD_HOME (registry.db + store/)."""
    reg = ModelRegistry.open(settings)
    yield reg
    reg.close()


def _classifier_onnx(x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=1000).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})
    path.write_bytes(onx.SerializeToString())
    return path


def register_classifier(
    registry: ModelRegistry,
    tmp_path: Path,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature_names: tuple[str, ...] | None = FEATURES,
) -> None:
    """Fit a logistic regression, export it (label + probabilities), register it."""
    path = _classifier_onnx(x.astype(np.float32), y, tmp_path / f"{name}.onnx")
    classes = tuple(np.unique(y).tolist())
    label_dtype = DType.BYTES if isinstance(classes[0], str) else DType.INT64
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, x.shape[1])),),
        outputs=(
            TensorSpec(name="label", dtype=label_dtype, shape=(None,)),
            TensorSpec(name="probabilities", dtype=DType.FP32, shape=(None, len(classes))),
        ),
    )
    task = TaskSchema(
        task=TaskType.CLASSIFICATION,
        class_labels=classes,
        label_output="label",
        scores_output="probabilities",
        feature_names=feature_names,
    )
    new = NewVersion(signature=sig, task=task, framework="sklearn")
    registry.register(name, new, {"model.onnx": path})


def register_regressor(
    registry: ModelRegistry, tmp_path: Path, x: np.ndarray, y: np.ndarray
) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import Ridge

    reg = Ridge().fit(x.astype(np.float32), y)
    path = tmp_path / "reg.onnx"
    path.write_bytes(to_onnx(reg, x[:1].astype(np.float32)).SerializeToString())
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, x.shape[1])),),
        outputs=(TensorSpec(name="variable", dtype=DType.FP32, shape=(None, 1)),),
    )
    task = TaskSchema(task=TaskType.REGRESSION, scores_output="variable")
    registry.register(
        "reg", NewVersion(signature=sig, task=task, framework="sklearn"), {"model.onnx": path}
    )


@pytest.fixture
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y
