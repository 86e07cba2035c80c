"""Stored drift references and the drift/estimate parts of a version's status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.config import load_settings
from shipyard.errors import InvalidData, InvalidInputError, InvalidName
from shipyard.monitoring.predlog import PredictionLog
from shipyard.monitoring.watch import (
    ReferenceSample,
    StatusCache,
    Window,
    drift_section,
    estimated_section,
    feature_layout,
    load_reference,
    read_latest,
    reference_path,
)
from shipyard.spec import DType, Signature, TaskSchema, TaskType, TensorSpec

SIG = Signature(
    inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, 3)),),
    outputs=(
        TensorSpec(name="label", dtype=DType.INT64, shape=(None,)),
        TensorSpec(name="proba", dtype=DType.FP32, shape=(None, 2)),
    ),
)
TASK = TaskSchema(
    task=TaskType.CLASSIFICATION,
    class_labels=(0, 1),
    label_output="label",
    scores_output="proba",
    feature_names=("a", "b", "c"),
)


def _model(x: np.ndarray) -> dict[str, np.ndarray]:
    """A fixed logistic model on the first feature: calibrated by construction."""
    p1 = 1.0 / (1.0 + np.exp(-2.0 * x[:, 0]))
    proba = np.stack([1 - p1, p1], axis=1).astype(np.float32)
    return {"label": (p1 > 0.5).astype(np.int64), "proba": proba}


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "x\\y", "UPPER", ""])
def test_reference_path_refuses_names_that_could_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidName):
        reference_path(tmp_path, name, 1)


@pytest.mark.parametrize("version", ["0", "-1", "1/../2", "x", "1.5"])
def test_reference_path_refuses_bad_versions(tmp_path: Path, version: str) -> None:
    with pytest.raises(InvalidInputError):
        reference_path(tmp_path, "iris", version)


def test_reference_path_stays_in_the_references_folder(tmp_path: Path) -> None:
    path = reference_path(tmp_path, "iris", "3")
    assert path == tmp_path / "references" / "iris" / "3.ref"


def test_sample_round_trips_and_keeps_at_most_max_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sample = ReferenceSample(SIG, TASK, max_rows=500)
    batches = [rng.normal(size=(n, 3)).astype(np.float32) for n in (300, 150, 400, 1000)]
    for x in batches:
        sample.add({"X": x}, _model(x))
    assert sample.seen == 1850 and sample.rows == 500
    sample.save(tmp_path, "m", 1, source="here")
    stored = load_reference(tmp_path, "m", 1)
    assert stored is not None
    assert stored.reference.features == ("a", "b", "c")
    assert stored.reference.prediction_columns == ("prediction[0]", "prediction[1]")
    assert stored.reference.n_rows == 500
    assert stored.meta["source"] == "here" and stored.meta["rows_seen"] == 1850
    # a uniform sample: rows from the last batch are kept too, about in proportion
    all_x = np.concatenate(batches)
    held = stored.reference._columns["a"].values  # sorted values of feature a
    late = np.isin(held, all_x[850:, 0]).mean()
    assert 0.35 < late < 0.75  # 1000 of 1850 rows came in the last batch (54%)


def test_a_file_that_is_not_a_reference_is_invalid_data(tmp_path: Path) -> None:
    path = reference_path(tmp_path, "m", 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a reference")
    with pytest.raises(InvalidData):
        load_reference(tmp_path, "m", 1)
    assert load_reference(tmp_path, "m", 2) is None


def test_layout_names_columns_by_task_else_by_position() -> None:
    assert feature_layout(SIG, ("a", "b", "c")) == ({"X": ["a", "b", "c"]}, [])
    assert feature_layout(SIG) == ({"X": ["X[0]", "X[1]", "X[2]"]}, [])
    image = Signature(
        inputs=(
            TensorSpec(name="img", dtype=DType.FP32, shape=(None, 3, 8, 8)),
            TensorSpec(name="age", dtype=DType.FP32, shape=(None, 1)),
        ),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 1)),),
    )
    assert feature_layout(image) == ({"age": None}, ["img"])


def _log(root: Path, x: np.ndarray, batch: int = 100) -> None:
    settings = load_settings({"home": str(root)})
    log = PredictionLog(root, settings.monitoring)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        log.record(f"r{i}", "m", "1", {"X": xb}, _model(xb), 0.001)
    log.flush()


def test_drift_flips_on_shifted_traffic_and_prediction_drift_appears(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(3000, 3)).astype(np.float32)
    sample = ReferenceSample(SIG, TASK)
    sample.add({"X": ref}, _model(ref))
    sample.save(tmp_path, "m", 1)

    same = rng.normal(size=(2000, 3)).astype(np.float32)
    _log(tmp_path, same)
    quiet = drift_section(tmp_path, "m", "1", read_latest(tmp_path, "m", "1", 2000))
    assert quiet["n_current"] == 2000 and quiet["absent"] == []
    assert [r["feature"] for r in quiet["features"][::2]] == ["a", "b", "c"]
    assert quiet["drifted_features"] == [] and quiet["prediction_drifted"] is False

    shifted = same + np.array([1.5, 0, 0], dtype=np.float32)
    _log(tmp_path, shifted)  # newer segments: the window holds only shifted rows
    loud = drift_section(tmp_path, "m", "1", read_latest(tmp_path, "m", "1", 2000))
    assert loud["drifted_features"] == ["a"]
    assert loud["prediction_drifted"] is True
    assert {r["feature"] for r in loud["prediction"] if r["drifted"]} >= {"prediction[1]"}


def test_no_reference_gives_the_command_that_sets_one(tmp_path: Path) -> None:
    section = drift_section(tmp_path, "m", "4", Window({}, {}))
    assert section == {
        "reference": None,
        "hint": "shipyard monitor set-reference m:4 --data FILE",
    }


def test_estimate_tracks_the_accuracy_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20_000, 3)).astype(np.float32)
    out = _model(x)
    truth = (rng.random(len(x)) < out["proba"][:, 1]).astype(np.int64)  # calibrated labels
    est = estimated_section(TASK, Window({"X": x}, out))
    assert est["available"] and est["n"] == 20_000
    measured = float((out["label"] == truth).mean())
    assert est["accuracy"] == pytest.approx(measured, abs=0.015)


def test_estimate_is_unavailable_without_scores() -> None:
    regression = TaskSchema(task=TaskType.REGRESSION, scores_output="y")
    est = estimated_section(regression, Window({}, {"y": np.ones((5, 1))}))
    assert est["available"] is False and "scores output" in est["reason"]


def test_status_cache_reuses_within_its_ttl() -> None:
    now = [0.0]
    cache = StatusCache(10.0, clock=lambda: now[0])
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("k", compute) == 1
    now[0] = 9.0
    assert cache.get("k", compute) == 1
    now[0] = 10.5
    assert cache.get("k", compute) == 2
