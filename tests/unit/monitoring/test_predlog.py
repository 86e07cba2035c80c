"""The prediction log: rows, privacy, sampling, drops, retention, the writer thread."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from shipyard.config import MonitoringSettings
from shipyard.monitoring import _segments
from shipyard.monitoring.feedback import FeedbackStore, parse_labels
from shipyard.monitoring.predlog import (
    PredictionLog,
    iter_requests,
    iter_rows,
    read_window,
    segment_paths,
)


def _log(tmp_path: Path, **kw: object) -> PredictionLog:
    return PredictionLog(tmp_path, MonitoringSettings(**kw))  # type: ignore[arg-type]


def _request(log: PredictionLog, rid: str, x: np.ndarray, model: str = "m") -> None:
    y = (x.sum(axis=1, keepdims=True) * 2).astype(np.float32)
    log.record(rid, model, "1", {"x": x}, {"y": y}, 0.002, key=f"k-{rid}")


def test_each_example_becomes_one_row_with_its_outputs(tmp_path: Path) -> None:
    log = _log(tmp_path)
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.ones((1, 2), dtype=np.float32)
    _request(log, "a", a)
    _request(log, "b", b, model="other")
    assert log.flush() == 4
    rows = list(iter_rows(tmp_path, "m"))
    assert [(r["request_id"], r["row"]) for r in rows] == [("a", 0), ("a", 1), ("a", 2)]
    assert [r["inputs"]["x"] for r in rows] == a.tolist()
    assert [r["outputs"]["y"] for r in rows] == (a.sum(axis=1, keepdims=True) * 2).tolist()
    assert rows[0]["key"] == "k-a" and rows[0]["version"] == "1"
    assert rows[0]["latency_ms"] == pytest.approx(2.0)
    assert [r["request_id"] for r in iter_rows(tmp_path, "other")] == ["b"]
    assert not list(tmp_path.glob("segments/*/*/.*"))  # no staged leftovers


def test_privacy_summary_hash_and_drop(tmp_path: Path) -> None:
    log = _log(tmp_path, inputs="summary", redact={"y": "hash", "z": "drop"}, hash_salt="pepper")
    x = np.array([[1.0, np.nan, 3.0]], dtype=np.float32)
    log.record("r", "m", "1", {"x": x}, {"y": np.array([[7]]), "z": np.array([[1]])}, 0.0)
    log.flush()
    (row,) = iter_rows(tmp_path)
    assert row["inputs"]["x"] == {"count": 3, "nan": 1, "mean": 2.0, "min": 1.0, "max": 3.0}
    assert row["outputs"]["y"] == hashlib.sha256(b"pepper" + orjson.dumps([7])).hexdigest()
    assert "z" not in row["outputs"]


def test_inputs_none_keeps_outputs_only(tmp_path: Path) -> None:
    log = _log(tmp_path, inputs="none")
    _request(log, "a", np.ones((2, 2), dtype=np.float32))
    log.flush()
    rows = list(iter_rows(tmp_path))
    assert all(r["inputs"] == {} and "y" in r["outputs"] for r in rows)


def test_sample_rate_zero_records_nothing(tmp_path: Path) -> None:
    log = _log(tmp_path, sample_rate=0.0)
    for i in range(100):
        _request(log, str(i), np.ones((1, 2), dtype=np.float32))
    assert log.flush() == 0 and log.dropped == 0


def test_full_queue_drops_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[int] = []
    log = PredictionLog(tmp_path, MonitoringSettings(queue_size=5), on_drop=reported.append)
    for i in range(12):
        _request(log, str(i), np.ones((1, 2), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="shipyard.monitoring.predlog"):
        assert log.flush() == 5
    assert log.dropped == 7 and reported == [7]
    assert "dropped 7 records" in caplog.text
    assert log.flush() == 0 and reported == [7]  # reported once


def test_retention_drops_old_inputs_first_then_old_segments(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path)
    log = PredictionLog(tmp_path, MonitoringSettings(), store=store)
    for i in range(12):  # 1 KB of inputs a segment, a few bytes of outputs
        _request(log, str(i), np.full((1, 256), i, dtype=np.float32))
        log.flush()
    before = segment_paths(tmp_path)
    full = before[0].stat().st_size
    assert _segments.without_inputs(before[0]) is not None  # measure one compacted
    small = before[0].stat().st_size
    # room for every segment compacted and three whole: the oldest nine lose their inputs
    log.settings = MonitoringSettings(max_bytes=12 * small + 3 * (full - small) + 10)
    assert log._retention(force=True) == 0
    assert segment_paths(tmp_path) == before
    rows = list(iter_rows(tmp_path))
    assert [r["inputs"] != {} for r in rows] == [False] * 9 + [True] * 3
    assert [r["outputs"]["y"] for r in rows] == [[512.0 * i] for i in range(12)]
    result = store.add_labels("m", parse_labels({"labels": [{"request_id": "0", "label": 1}]}))
    assert [r.outputs for r in result.joined] == [{"y": [0.0]}]  # joins after compaction
    # room for four compacted segments: the oldest go, and leave the index
    log.settings = MonitoringSettings(max_bytes=4 * small + 10)
    assert log._retention(force=True) == 8
    assert segment_paths(tmp_path) == before[8:]
    assert store.labelled("m") == [] and store.counts("m")["1"] == {
        "predictions": 4,
        "labels": 1,
    }
    old = before[-1].with_name("00000000000000000001-1-000001.jsonl")
    old.write_bytes(b"{}\n")
    log.settings = MonitoringSettings(max_age_days=1)
    log._retention(force=True)
    assert not old.exists() and before[-1].exists()
    store.close()


def test_writer_thread_flushes_within_the_interval(tmp_path: Path) -> None:
    log = _log(tmp_path, flush_interval_s=0.05).start()
    try:
        _request(log, "a", np.ones((1, 2), dtype=np.float32))
        end = time.monotonic() + 5
        while not segment_paths(tmp_path) and time.monotonic() < end:
            time.sleep(0.01)
        assert segment_paths(tmp_path)
        _request(log, "b", np.ones((1, 2), dtype=np.float32))
    finally:
        log.close()  # flushes the rest
    assert [r["request_id"] for r in iter_rows(tmp_path)] == ["a", "b"]


def test_the_writer_releases_requests_at_once_and_commits_once_per_interval(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path, flush_interval_s=30).start()
    try:
        _request(log, "a", np.ones((1, 2), dtype=np.float32))
        end = time.monotonic() + 5
        while log.written_rows < 1 and time.monotonic() < end:
            time.sleep(0.005)
        # drained within DRAIN_S: the serving thread's tensors are no longer held ...
        assert not log._queue and log.written_rows == 1
        time.sleep(0.1)
        _request(log, "b", np.ones((2, 2), dtype=np.float32))
        while log.written_rows < 3 and time.monotonic() < end:
            time.sleep(0.005)
        # ... but nothing is committed before the interval: one staged file, no segment
        assert log.written_rows == 3
        assert not segment_paths(tmp_path)
        assert len(list(tmp_path.glob("segments/m/1/.*.tmp"))) == 1
    finally:
        log.close()  # commits what is staged
    assert len(segment_paths(tmp_path)) == 1
    assert [r["request_id"] for r in iter_rows(tmp_path)] == ["a", "b", "b"]
    assert not list(tmp_path.glob("segments/*/*/.*"))


def test_rows_are_indexed_for_feedback(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path)
    log = PredictionLog(tmp_path, MonitoringSettings(), store=store)
    _request(log, "a", np.ones((2, 2), dtype=np.float32))
    log.flush()
    assert store.counts("m") == {"1": {"predictions": 2, "labels": 0}}
    store.close()


def test_mixed_batch_sizes_bytes_and_non_batch_major_tensors_round_trip(tmp_path: Path) -> None:
    log = _log(tmp_path)
    words = np.array([[b"a", b"bc"], [b"\xff", "d"]], dtype=object)
    log.record("a", "m", "1", {"x": np.ones((2, 3)), "w": words}, {"y": np.arange(2)}, 0.0)
    log.record("b", "m", "1", {"x": np.zeros((1, 3)), "w": words[:1]}, {"y": np.arange(1)}, 0.0)
    # an output that is not batch-major (one value for the whole request)
    log.record("c", "m", "1", {"x": np.ones((1, 3)), "w": words[:1]}, {"y": np.float32(7)}, 0.0)
    assert log.flush() == 4
    rows = list(iter_rows(tmp_path))
    assert [(r["request_id"], r["row"], r["rows"]) for r in rows] == [
        ("a", 0, 2),
        ("a", 1, 2),
        ("b", 0, 1),
        ("c", 0, 1),
    ]
    assert rows[1]["inputs"]["w"] == [{"b64": "/w=="}, "d"]
    assert rows[1]["outputs"]["y"] == 1 and rows[2]["inputs"]["x"] == [0.0, 0.0, 0.0]
    assert rows[3]["outputs"]["y"] == 7.0
    (req_a, *_rest) = iter_requests(tmp_path)
    assert req_a["inputs"]["x"] == [[1.0] * 3, [1.0] * 3] and req_a["outputs"]["y"] == [0, 1]


def test_rows_come_from_the_first_batch_major_tensor_and_ids_keep_their_text(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path)
    for rid, n in (("a", 2), ("é-ü", 1), ("c", 3)):  # no keys; an id that is not ASCII
        outputs = {"score": np.float32(n), "y": np.arange(n)}  # score has no batch axis
        log.record(rid, "m", "1", {"x": np.ones((n, 2))}, outputs, 0.0)
    assert log.flush() == 6
    rows = list(iter_rows(tmp_path))
    assert [(r["request_id"], r["row"], r["rows"]) for r in rows] == [
        ("a", 0, 2),
        ("a", 1, 2),
        ("é-ü", 0, 1),
        ("c", 0, 3),
        ("c", 1, 3),
        ("c", 2, 3),
    ]
    assert {r["key"] for r in rows} == {None}
    assert [r["outputs"]["score"] for r in rows] == [2.0, 2.0, 1.0, 3.0, 3.0, 3.0]


def test_summaries_of_rows_without_finite_values_have_counts_only(tmp_path: Path) -> None:
    log = _log(tmp_path, inputs="summary")
    x = np.array([[np.nan, np.inf], [1.0, 5.0]])
    log.record("r", "m", "1", {"x": x}, {"y": np.array([1, 2])}, 0.0)
    log.flush()
    first, second = (r["inputs"]["x"] for r in iter_rows(tmp_path))
    assert first == {"count": 2, "nan": 1}
    assert second == {"count": 2, "nan": 0, "mean": 3.0, "min": 1.0, "max": 5.0}


def test_read_window_returns_the_latest_rows_as_arrays(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(5):  # five segments of two rows each
        x = np.full((2, 3), i, dtype=np.float32)
        log.record(str(i), "m", "1", {"x": x}, {"y": x.sum(axis=1)}, 0.0)
        log.flush()
    window = read_window(tmp_path, "m", "1", 3)
    assert window["x"].shape == (3, 3) and window["x"][:, 0].tolist() == [3.0, 4.0, 4.0]
    outputs = read_window(tmp_path, "m", "1", 100, part="outputs")
    assert outputs["y"].tolist() == [0, 0, 3, 3, 6, 6, 9, 9, 12, 12]


def test_segments_are_arrow_files_and_the_writer_never_imports_pandas(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np; from pathlib import Path\n"
        "from shipyard.config import MonitoringSettings\n"
        "from shipyard.monitoring.predlog import PredictionLog\n"
        f"log = PredictionLog(Path({str(tmp_path)!r}), MonitoringSettings())\n"
        "log.record('a', 'm', '1', {'x': np.ones((2, 3))}, {'y': np.ones(2)}, 0.0)\n"
        "log.flush()\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    (segment,) = segment_paths(tmp_path)
    table = pa.ipc.open_file(pa.memory_map(str(segment))).read_all()
    assert table.schema.metadata[b"model"] == b"m"
    assert table.column("inputs").type.field("x").type == pa.list_(pa.float64(), 3)


def test_encrypted_segments_hold_no_plaintext_and_need_their_key(tmp_path: Path) -> None:
    import os

    from shipyard._utils.crypto import StaticKeyProvider
    from shipyard.errors import DecryptionFailed, EncryptionKeyMissing

    keys = StaticKeyProvider([os.urandom(32)])
    store = FeedbackStore.open(tmp_path, keys=keys)
    log = PredictionLog(tmp_path, MonitoringSettings(), store=store, keys=keys)
    secret = np.full((1, 4), 1234.5, dtype=np.float32)
    log.record("req-secret", "m", "1", {"x": secret}, {"y": np.array([7])}, 0.0, key="k-secret")
    log.flush()
    (segment,) = segment_paths(tmp_path)
    raw = segment.read_bytes()
    assert raw.startswith(b"SHPYENC1")
    assert b"req-secret" not in raw and b"k-secret" not in raw and secret.tobytes() not in raw
    (row,) = iter_rows(tmp_path, keys=keys)
    assert row["request_id"] == "req-secret" and row["inputs"]["x"] == secret[0].tolist()
    with pytest.raises(EncryptionKeyMissing):
        list(iter_rows(tmp_path))
    with pytest.raises(EncryptionKeyMissing, match="needs that key"):  # another key
        list(iter_rows(tmp_path, keys=StaticKeyProvider([os.urandom(32)])))
    # labels join through the encrypted segment, and compaction keeps it encrypted
    joined = store.add_labels(
        "m", parse_labels({"labels": [{"request_id": "req-secret", "label": 7}]})
    )
    assert [r.outputs for r in joined.joined] == [{"y": 7}]
    assert _segments.without_inputs(segment, keys) is not None
    assert segment.read_bytes().startswith(b"SHPYENC1")
    assert [r.outputs for r in store.labelled("m")] == [{"y": 7}]
    # the segment's name is authenticated: a renamed one does not decrypt
    moved = segment.with_name("00000000000000000002-1-000001.arrow")
    segment.rename(moved)
    with pytest.raises(DecryptionFailed):
        list(iter_rows(tmp_path, keys=keys))
    store.close()
