from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from shipyard.errors import InvalidData, InvalidInputError
from shipyard.registry import ModelRegistry
from shipyard.spec import NewVersion
from shipyard.testing import make_tiny_manifest
from shipyard.workflows.predict import predict_file

from .conftest import FEATURES, register_classifier, register_regressor


def _features_csv(path: Path, x: np.ndarray, **extra: np.ndarray) -> Path:
    cols = {f: x[:, i] for i, f in enumerate(FEATURES)}
    pacsv.write_csv(pa.table({**cols, **extra}), path)
    return path


def _direct(registry: ModelRegistry, ref: str, x: np.ndarray, name: str = "X") -> list[np.ndarray]:
    sess = ort.InferenceSession(registry.read_artifact(ref), providers=["CPUExecutionProvider"])
    return sess.run(None, {name: x.astype(np.float32)})


def test_predict_file_streams_a_large_csv_in_batches_and_matches_onnxruntime(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    rng = np.random.default_rng(seed)
    big = x[rng.integers(0, len(x), size=50_000)] + rng.normal(size=(50_000, 4)) * 0.1
    data = _features_csv(tmp_path / "big.csv", big)
    calls: list[int] = []
    out = tmp_path / "preds.csv"
    summary = predict_file(registry, "iris", data, out, batch_size=8192, progress=calls.append)
    assert calls == [8192] * 6 + [50_000 - 6 * 8192]
    assert summary.rows == 50_000
    assert summary.batches == 7
    assert summary.out == out
    assert summary.columns == ("label", "proba_0", "proba_1", "proba_2")
    table = pacsv.read_csv(out)
    labels, proba = _direct(registry, "iris", big.astype(np.float32))
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    got = np.column_stack([table[f"proba_{c}"].to_numpy() for c in range(3)])
    np.testing.assert_allclose(got, proba, rtol=1e-5, atol=1e-6)


def test_predict_file_writes_parquet_and_ignores_an_extra_label_column(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y, feature_names=None)
    data = _features_csv(tmp_path / "iris.csv", x, species=y)
    out = tmp_path / "preds.parquet"
    summary = predict_file(registry, "iris", data, out, batch_size=64)
    table = pq.read_table(out)
    assert table.num_rows == 150 == summary.rows
    np.testing.assert_array_equal(table["label"].to_numpy(), _direct(registry, "iris", x)[0])


def test_predict_file_writes_npz_with_string_labels(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    register_classifier(registry, tmp_path, "iris", x, names)
    out = tmp_path / "preds.npz"
    predict_file(registry, "iris", _features_csv(tmp_path / "i.csv", x), out, batch_size=50)
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == [
            "label",
            "proba_setosa",
            "proba_versicolor",
            "proba_virginica",
        ]
        assert npz["label"].tolist() == _direct(registry, "iris", x)[0].tolist()


def test_predict_file_writes_a_prediction_column_for_regressors(
    registry: ModelRegistry, tmp_path: Path, seed: int
) -> None:
    x = np.random.default_rng(seed).normal(size=(100, 4))
    register_regressor(registry, tmp_path, x, x[:, 0] * 2)
    np.savez(tmp_path / "in.npz", X=x)
    out = tmp_path / "out.csv"
    predict_file(registry, "reg", tmp_path / "in.npz", out, batch_size=30)
    table = pacsv.read_csv(out)
    assert table.column_names == ["prediction"]
    expected = _direct(registry, "reg", x)[0].reshape(-1)
    np.testing.assert_allclose(table["prediction"].to_numpy(), expected, rtol=1e-5)


def test_predict_file_flattens_outputs_of_other_models(
    registry: ModelRegistry, tmp_path: Path, tiny_onnx: Path
) -> None:
    manifest = make_tiny_manifest()
    registry.register(
        "tiny",
        NewVersion(signature=manifest.signature, framework="onnx"),
        {"model.onnx": tiny_onnx},
    )
    x = np.ones((5, 4), np.float32)
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.parquet"
    summary = predict_file(registry, "tiny", tmp_path / "in.npy", out)
    assert summary.columns == ("y_0", "y_1")
    table = pq.read_table(out)
    expected = _direct(registry, "tiny", x, name="x")[0]
    np.testing.assert_allclose(table["y_1"].to_numpy(), expected[:, 1], rtol=1e-6)


def test_a_failed_run_leaves_no_output_and_no_temporary_file(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1,f2,f3\n" + "1,2,3,4\n" * 10 + "1,oops,3,4\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "preds.csv"
    with pytest.raises(InvalidData):
        predict_file(registry, "iris", bad, out, batch_size=4)
    assert list(out_dir.iterdir()) == []


def test_an_existing_output_is_replaced_whole(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y)
    out = tmp_path / "preds.csv"
    out.write_text("old content\n")
    predict_file(registry, "iris", _features_csv(tmp_path / "i.csv", x), out)
    assert pacsv.read_csv(out).num_rows == 150


def test_unsupported_output_extension_is_refused_before_any_work(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="must end in one of"):
        predict_file(registry, "ghost", tmp_path / "in.csv", tmp_path / "out.json")
