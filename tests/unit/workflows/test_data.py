from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from shipyard.errors import DataNotFound, InvalidData, InvalidInputError, SignatureMismatch
from shipyard.spec import DType, Signature, TensorSpec
from shipyard.workflows.data import iter_batches, load_table

SIG = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 3)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 1)),),
)


def _table(n: int = 10) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "a": rng.normal(size=n),
            "b": np.arange(n, dtype=np.int64),
            "label": np.array(["cat", "dog"] * (n // 2)),
            "c": rng.normal(size=n).astype(np.float32),
        }
    )


@pytest.fixture(params=["csv", "parquet"])
def table_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"data.{request.param}"
    if request.param == "csv":
        pacsv.write_csv(_table(), path)
    else:
        pq.write_table(_table(), path)
    return path


def test_load_table_takes_non_target_columns_in_file_order(table_file: Path) -> None:
    tensors, y = load_table(table_file, signature=SIG, target="label")
    expected = _table()
    assert tensors["x"].dtype == np.float32
    np.testing.assert_allclose(tensors["x"][:, 0], expected["a"].to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(tensors["x"][:, 1], expected["b"].to_numpy())
    assert y is not None
    assert y.tolist() == expected["label"].to_pylist()


def test_load_table_orders_features_by_feature_names(table_file: Path) -> None:
    tensors, _ = load_table(table_file, signature=SIG, feature_names=["c", "b", "a"])
    np.testing.assert_array_equal(tensors["x"][:, 1], np.arange(10))


def test_missing_target_column_names_the_available_columns(table_file: Path) -> None:
    with pytest.raises(InvalidData, match=r"Target column 'nope'.*\['a', 'b', 'label', 'c'\]"):
        load_table(table_file, signature=SIG, target="nope")


def test_non_numeric_feature_column_is_named(table_file: Path) -> None:
    with pytest.raises(InvalidData, match="Feature column 'label' must be numeric"):
        load_table(table_file, signature=SIG, feature_names=["a", "label", "c"])


def test_wrong_number_of_features_is_a_signature_mismatch(table_file: Path) -> None:
    with pytest.raises(SignatureMismatch, match=r"must have shape \(N, 3\).*Got 2 columns"):
        load_table(table_file, signature=SIG, feature_names=["a", "b"])


def test_missing_feature_column_names_the_available_columns(table_file: Path) -> None:
    with pytest.raises(InvalidData, match=r"\['zz'\] must be in"):
        load_table(table_file, signature=SIG, feature_names=["a", "b", "zz"])


def test_extra_columns_are_ignored_only_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pacsv.write_csv(pa.table({"a": [1.0], "b": [2.0], "c": [3.0], "species": [1]}), path)
    with pytest.raises(SignatureMismatch):
        load_table(path, signature=SIG)
    tensors, _ = load_table(path, signature=SIG, allow_extra_columns=True)
    assert tensors["x"].tolist() == [[1.0, 2.0, 3.0]]


def test_missing_file_is_data_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        load_table(tmp_path / "absent.csv", signature=SIG)


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"")
    with pytest.raises(InvalidData, match=r"must end in one of"):
        load_table(path, signature=SIG)


def test_npz_reads_x_and_y_or_arrays_named_after_inputs(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "a.npz", X=x, y=np.array([0, 1, 0, 1]))
    tensors, y = load_table(tmp_path / "a.npz", signature=SIG, target="y")
    np.testing.assert_array_equal(tensors["x"], x)
    assert y is not None
    assert y.tolist() == [0, 1, 0, 1]
    np.savez(tmp_path / "b.npz", x=x, target=np.zeros(4))
    tensors, y = load_table(tmp_path / "b.npz", signature=SIG, target="target")
    assert tensors["x"].shape == (4, 3)


def test_npz_missing_target_lists_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", X=np.zeros((2, 3)))
    with pytest.raises(InvalidData, match=r"Target array 'y'.*\['X'\]"):
        load_table(tmp_path / "a.npz", signature=SIG, target="y")


def test_npz_with_the_wrong_width_is_a_signature_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", X=np.zeros((2, 5)))
    with pytest.raises(SignatureMismatch, match=r"\(N, 3\)"):
        load_table(tmp_path / "a.npz", signature=SIG)


def test_iter_batches_streams_a_csv_in_exact_batches(tmp_path: Path) -> None:
    n = 30_000
    rng = np.random.default_rng(1)
    data = rng.normal(size=(n, 3))
    path = tmp_path / "big.csv"
    pacsv.write_csv(pa.table({"a": data[:, 0], "b": data[:, 1], "c": data[:, 2]}), path)
    batches = list(iter_batches(path, signature=SIG, batch_size=7000))
    assert [len(b[0]["x"]) for b in batches] == [7000, 7000, 7000, 7000, 2000]
    stacked = np.concatenate([b[0]["x"] for b in batches])
    np.testing.assert_allclose(stacked, data.astype(np.float32), rtol=1e-6)


def test_iter_batches_reads_parquet_and_npy(tmp_path: Path) -> None:
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}), tmp_path / "d.parquet")
    np.save(tmp_path / "d.npy", x)
    for name in ("d.parquet", "d.npy"):
        batches = list(iter_batches(tmp_path / name, signature=SIG, batch_size=4))
        assert [len(b[0]["x"]) for b in batches] == [4, 4, 2]
        np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in batches]), x)


def test_iter_batches_checks_the_schema_before_the_first_batch(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        iter_batches(tmp_path / "absent.parquet", signature=SIG, batch_size=10)
    with pytest.raises(InvalidInputError, match="batch_size"):
        iter_batches(tmp_path / "absent.parquet", signature=SIG, batch_size=0)


def test_a_malformed_value_mid_file_is_invalid_data(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    rows = "a,b,c\n" + "1,2,3\n" * 5 + "1,oops,3\n"
    path.write_text(rows)
    with pytest.raises(InvalidData):
        list(iter_batches(path, signature=SIG, batch_size=2))


def test_models_with_one_column_per_input_read_columns_by_name(tmp_path: Path) -> None:
    sig = Signature(
        inputs=(
            TensorSpec(name="age", dtype=DType.FP32, shape=(None, 1)),
            TensorSpec(name="city", dtype=DType.BYTES, shape=(None, 1)),
        ),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 1)),),
    )
    path = tmp_path / "d.csv"
    pacsv.write_csv(pa.table({"city": ["a", "b"], "age": [1, 2], "y": [0, 1]}), path)
    tensors, y = load_table(path, signature=sig, target="y")
    assert tensors["age"].tolist() == [[1.0], [2.0]]
    assert tensors["city"].tolist() == [["a"], ["b"]]
    assert y is not None
    assert y.tolist() == [0, 1]
