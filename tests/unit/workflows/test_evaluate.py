from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from shipyard.errors import InvalidData, InvalidInputError, ModelNotFound
from shipyard.registry import ModelRegistry
from shipyard.spec import NewVersion
from shipyard.testing import make_tiny_manifest
from shipyard.workflows.evaluate import evaluate

from .conftest import FEATURES, register_classifier, register_regressor


def _direct(registry: ModelRegistry, ref: str, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(registry.read_artifact(ref), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x.astype(np.float32)})


def _write_csv(path: Path, x: np.ndarray, target: np.ndarray, name: str = "species") -> Path:
    cols = {f: x[:, i] for i, f in enumerate(FEATURES)}
    cols[name] = target
    pacsv.write_csv(pa.table(cols), path)
    return path


def test_evaluate_classifier_matches_sklearn_metrics_on_direct_predictions(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    data = _write_csv(tmp_path / "iris.csv", x, y)
    result = evaluate(registry, "iris", data, target="species", batch_size=64)
    labels = _direct(registry, "iris", x)[0]
    assert result.ref == "iris:1"
    assert result.task == "classification"
    assert result.n_rows == 150
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert result.metrics["f1_macro"] == pytest.approx(skm.f1_score(y, labels, average="macro"))
    assert result.metrics["labels"] == [0, 1, 2]
    assert result.per_class["2"]["support"] == 50
    assert "roc_auc" not in result.metrics  # three classes


def test_evaluate_stores_a_summary_on_the_version(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    data = _write_csv(tmp_path / "iris.csv", x, y)
    result = evaluate(registry, "iris", data, target="species", actor="ci")
    stored = registry.get("iris:1").metrics["eval"]
    assert stored["accuracy"] == result.metrics["accuracy"]
    assert stored["n_rows"] == 150
    assert stored["data"] == str(data)
    assert stored["confusion_matrix"] == result.metrics["confusion_matrix"]


def test_evaluate_without_store_leaves_the_version_alone(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    evaluate(registry, "iris", _write_csv(tmp_path / "i.csv", x, y), target="species", store=False)
    assert "eval" not in registry.get("iris").metrics


def test_float_labels_in_the_data_match_int_class_labels(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    path = tmp_path / "iris.parquet"
    cols = {f: x[:, i] for i, f in enumerate(FEATURES)}
    pq.write_table(pa.table({**cols, "species": y.astype(np.float64)}), path)
    result = evaluate(registry, "iris", path, target="species", store=False)
    assert result.metrics["accuracy"] > 0.9
    assert result.metrics["labels"] == [0, 1, 2]


def test_string_class_labels_are_evaluated(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    register_classifier(registry, tmp_path, "iris-names", x, names)
    data = _write_csv(tmp_path / "iris.csv", x, names)
    result = evaluate(registry, "iris-names", data, target="species", store=False)
    assert result.metrics["labels"] == ["setosa", "versicolor", "virginica"]
    assert result.metrics["accuracy"] > 0.9


def test_binary_classifier_gets_roc_auc_equal_to_sklearn(
    registry: ModelRegistry, tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(np.int64)
    register_classifier(registry, tmp_path, "bin", x, y)
    result = evaluate(registry, "bin", _write_csv(tmp_path / "b.csv", x, y), target="species")
    proba = _direct(registry, "bin", x)[1]
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-9)


def test_evaluate_regressor_matches_sklearn(
    registry: ModelRegistry, tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=300) * 0.1
    register_regressor(registry, tmp_path, x, y)
    np.savez(tmp_path / "reg.npz", X=x, y=y)
    result = evaluate(registry, "reg", tmp_path / "reg.npz")  # .npz target defaults to "y"
    pred = _direct(registry, "reg", x)[0].reshape(-1)
    assert result.task == "regression"
    assert result.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-9)
    assert result.metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred), abs=1e-9)
    assert result.metrics["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-9)
    assert result.per_class == {}


def test_evaluate_refuses_a_model_without_a_quality_task(
    registry: ModelRegistry, tmp_path: Path, tiny_onnx: Path
) -> None:
    manifest = make_tiny_manifest()
    registry.register(
        "tiny",
        NewVersion(signature=manifest.signature, framework="onnx"),
        {"model.onnx": tiny_onnx},
    )
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 4)), y=np.zeros(2))
    with pytest.raises(InvalidInputError, match="classification or regression") as info:
        evaluate(registry, "tiny", tmp_path / "t.npz")
    assert info.value.hint is not None
    assert "task" in info.value.hint


def test_evaluate_names_the_columns_when_the_target_is_missing(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    data = _write_csv(tmp_path / "iris.csv", x, y)
    with pytest.raises(InvalidData, match=r"'nope'.*'species'"):
        evaluate(registry, "iris", data, target="nope")
    with pytest.raises(InvalidInputError, match="label column"):
        evaluate(registry, "iris", data)


def test_evaluate_unknown_model_is_not_found(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        evaluate(registry, "ghost", tmp_path / "x.csv", target="y")
