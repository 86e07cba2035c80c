"""Feedback: labels joined to logged rows by request id and row, or by the client's key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import InvalidData
from shipyard.monitoring.feedback import FeedbackStore, parse_labels
from shipyard.monitoring.joined import quality_of


def _requests(n: int) -> list[dict[str, object]]:
    """``n`` logged requests of 2 rows each: row i of the log predicts label i % 3."""
    return [
        {
            "request_id": f"r{j}",
            "ts": 1000.0 + j,
            "key": f"k{j}",
            "rows": 2,
            "outputs": {
                "label": [[(2 * j) % 3], [(2 * j + 1) % 3]],
                "probabilities": [[0.1, 0.2, 0.7]] * 2,
            },
        }
        for j in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    s = FeedbackStore.open(tmp_path)
    s.index_predictions("m", "1", _requests(3))
    yield s
    s.close()


def test_labels_join_by_request_id_and_row_or_key(store: FeedbackStore) -> None:
    items = parse_labels(
        {
            "labels": [
                {"request_id": "r0", "row": 1, "label": 1},
                {"key": "k2", "label": 2},  # row 0 of the request keyed k2
                {"request_id": "nope", "label": 0},
                {"request_id": "r1", "row": 5, "label": 0},
            ]
        }
    )
    result = store.add_labels("m", items)
    assert result.accepted == 2
    assert result.unknown == [
        {"index": 2, "request_id": "nope", "row": 0},
        {"index": 3, "request_id": "r1", "row": 5},
    ]
    joined = store.labelled("m")
    assert [(r.request_id, r.row, r.label) for r in joined] == [("r0", 1, 1), ("r2", 0, 2)]
    assert store.counts("m") == {"1": {"predictions": 6, "labels": 2}}


def test_a_later_label_replaces_the_earlier_one(store: FeedbackStore) -> None:
    store.add_labels("m", parse_labels([{"request_id": "r0", "label": 0}]))
    store.add_labels("m", parse_labels([{"request_id": "r0", "label": 2}]))
    assert [r.label for r in store.labelled("m")] == [2]


def test_labels_of_another_model_are_unknown(store: FeedbackStore) -> None:
    result = store.add_labels("other", parse_labels([{"request_id": "r0", "label": 0}]))
    assert result.accepted == 0 and len(result.unknown) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "non-empty list"),
        ([], "non-empty list"),
        ([{"request_id": "a"}], "Label 0 must be an object with 'label'"),
        ([{"label": 1}], "one of them"),
        ([{"label": 1, "request_id": "a", "key": "b"}], "one of them"),
        ([{"label": 1, "request_id": 5}], "string"),
        ([{"label": 1, "request_id": "a", "row": -1}], "'row' must be an integer >= 0"),
        ([{"label": {"a": 1}, "request_id": "a"}], "'label' must be a string"),
    ],
)
def test_malformed_feedback_is_refused_with_the_item_named(body: object, match: str) -> None:
    with pytest.raises(InvalidData, match=match):
        parse_labels(body)


def test_live_quality_uses_the_evaluation_metrics(store: FeedbackStore) -> None:
    from shipyard.metrics import classification_metrics

    labels = [0, 1, 1, 0, 2, 2]
    store.add_labels(
        "m",
        parse_labels(
            [{"request_id": f"r{i // 2}", "row": i % 2, "label": y} for i, y in enumerate(labels)]
        ),
    )
    rows = store.labelled("m")
    q = quality_of(rows, task="classification", label_output="label")
    want = classification_metrics(labels, [i % 3 for i in range(6)])
    assert q["n"] == 6 and q["accuracy"] == want["accuracy"] and q["f1_macro"] == want["f1_macro"]
    reg = quality_of(rows, task="regression", scores_output="label")
    assert reg["n"] == 6 and "rmse" in reg
    assert quality_of([], task="classification") == {"n": 0}


def test_labels_join_outputs_read_from_segments_also_without_sqlite_json(
    tmp_path: Path,
) -> None:
    from shipyard.config import MonitoringSettings
    from shipyard.monitoring.predlog import PredictionLog

    for portable in (False, True):
        root = tmp_path / str(portable)
        store = FeedbackStore.open(root)
        store._sqlite = not portable  # the dialect-neutral insert, as PostgreSQL would use
        log = PredictionLog(root, MonitoringSettings(), store=store)
        log.record("a", "m", "1", {"x": np.ones((2, 2))}, {"y": np.array([5, 6])}, 0.0)
        log.record("b", "m", "1", {"x": np.ones((1, 2))}, {"y": np.array([7])}, 0.0)
        log.flush()
        items = parse_labels(
            {"labels": [{"request_id": "b", "label": 7}, {"request_id": "a", "row": 1, "label": 0}]}
        )
        result = store.add_labels("m", items)
        assert result.accepted == 2 and not result.unknown
        assert sorted((r.request_id, r.row, r.outputs["y"]) for r in result.joined) == [
            ("a", 1, 6),
            ("b", 0, 7),
        ]
        assert [(r.request_id, r.outputs["y"], r.label) for r in store.labelled("m")] == [
            ("a", 6, 0),
            ("b", 7, 7),
        ]
        for segment in (root / "segments").rglob("*.arrow"):  # retention took them
            segment.unlink()
        assert store.labelled("m") == []
        assert store.counts("m")["1"]["labels"] == 2  # the labels themselves are kept
        store.close()


def test_a_database_from_before_segment_indexing_gains_its_columns(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "feedback.db") as db:
        db.execute(
            "CREATE TABLE predictions (model VARCHAR(64), request_id VARCHAR(128), "
            "version VARCHAR(16) NOT NULL, ts FLOAT NOT NULL, key VARCHAR(256), "
            "rows INTEGER NOT NULL, outputs TEXT NOT NULL, PRIMARY KEY (model, request_id))"
        )
        db.execute("INSERT INTO predictions VALUES ('m', 'old', '1', 1.0, NULL, 1, '{\"y\":[3]}')")
    store = FeedbackStore.open(tmp_path)
    result = store.add_labels("m", parse_labels({"labels": [{"request_id": "old", "label": 3}]}))
    assert [r.outputs for r in result.joined] == [{"y": 3}]  # the old row, read as before
    store.index_segment("m", "1", "s.arrow", ["new"], [1], [None], (2.0, 2.0))
    assert store.counts("m")["1"]["predictions"] == 2
    store.close()


def test_a_database_of_the_predictions_layout_is_migrated_and_still_joins(
    tmp_path: Path,
) -> None:
    import sqlite3

    from shipyard.config import MonitoringSettings
    from shipyard.monitoring.predlog import PredictionLog, segment_paths

    log = PredictionLog(tmp_path, MonitoringSettings())  # a segment, indexed below by hand
    log.record("a", "m", "1", {"x": np.ones((2, 2))}, {"y": np.array([5, 6])}, 0.0)
    log.record("b", "m", "1", {"x": np.ones((1, 2))}, {"y": np.array([7])}, 0.0)
    log.flush()
    (segment,) = segment_paths(tmp_path)
    with sqlite3.connect(tmp_path / "feedback.db") as db:  # as the writer left it before
        db.execute(
            "CREATE TABLE predictions (model VARCHAR(64), request_id VARCHAR(128), "
            "version VARCHAR(16) NOT NULL, ts FLOAT NOT NULL, key VARCHAR(256), "
            "rows INTEGER NOT NULL, outputs TEXT NOT NULL, segment VARCHAR(128), "
            "first_row INTEGER, PRIMARY KEY (model, request_id))"
        )
        db.execute("CREATE INDEX ix_predictions_key ON predictions (key)")
        db.executemany(
            "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("m", "a", "1", 10.0, "ka", 2, "", segment.name, 0),
                ("m", "b", "1", 10.0, None, 1, "", segment.name, 2),
                ("m", "old", "0", 1.0, "ko", 1, '{"y":[3]}', None, None),
            ],
        )
    for _ in range(2):  # the second open finds nothing left to migrate
        store = FeedbackStore.open(tmp_path)
        assert store.counts("m") == {
            "1": {"predictions": 3, "labels": 0},
            "0": {"predictions": 1, "labels": 0},
        }
        store.close()
    store = FeedbackStore.open(tmp_path)
    items = parse_labels(
        [
            {"request_id": "a", "row": 1, "label": 6},
            {"key": "ko", "label": 3},
            {"request_id": "b", "label": 7},
            {"request_id": "b", "row": 1, "label": 0},  # b has one row
        ]
    )
    result = store.add_labels("m", items)
    assert result.unknown == [{"index": 3, "request_id": "b", "row": 1}]
    assert sorted((r.version, r.request_id, r.row, r.outputs["y"]) for r in result.joined) == [
        ("0", "old", 0, 3),
        ("1", "a", 1, 6),
        ("1", "b", 0, 7),
    ]
    assert [(r.request_id, r.label) for r in store.labelled("m")] == [
        ("old", 3),
        ("a", 6),
        ("b", 7),
    ]
    store.forget_segments([("m", "1", segment.name)])
    assert store.counts("m")["1"] == {"predictions": 0, "labels": 2}
    with sqlite3.connect(tmp_path / "feedback.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "predictions" not in tables
    store.close()


def test_a_segment_s_requests_are_indexed_with_their_rows_and_keys(tmp_path: Path) -> None:
    from shipyard.config import MonitoringSettings
    from shipyard.monitoring.predlog import PredictionLog

    store = FeedbackStore.open(tmp_path)
    log = PredictionLog(tmp_path, MonitoringSettings(), store=store)
    log.record("a", "m", "1", {"x": np.ones((1, 2))}, {"y": np.array([1])}, 0.0)
    log.record_batch(
        "m",
        "1",
        ["b", "c", "d"],
        [None, "kc", None],
        [1.0, 1.0, 1.0],
        [2, 1, 3],
        {"x": np.ones((6, 2))},
        {"y": np.arange(2, 8)},
    )
    log.flush()
    items = parse_labels(
        [
            {"request_id": "b", "row": 1, "label": 0},
            {"key": "kc", "label": 0},
            {"request_id": "d", "row": 2, "label": 0},
            {"request_id": "d", "row": 3, "label": 0},
        ]
    )
    result = store.add_labels("m", items)
    assert [u["index"] for u in result.unknown] == [3]
    assert [(r.request_id, r.row, r.outputs["y"]) for r in result.joined] == [
        ("b", 1, 3),
        ("c", 0, 4),
        ("d", 2, 7),
    ]
    assert all(r.ts > 0 for r in result.joined)  # read from the segment
    assert store.counts("m")["1"]["predictions"] == 7
    store.close()


@pytest.mark.parametrize("portable", [False, True])
def test_forgetting_a_segment_keeps_an_id_first_indexed_at_another(
    tmp_path: Path, portable: bool
) -> None:
    store = FeedbackStore.open(tmp_path)
    store._sqlite = not portable  # the dialect-neutral statements, as PostgreSQL would use
    store.index_segment("m", "1", "1.arrow", ["a", "b"], [1, 1], [None, None], (1.0, 1.0))
    store.index_segment("m", "1", "2.arrow", ["a", "c"], [1, 2], [None, "k"], (2.0, 2.0))
    assert store.counts("m")["1"]["predictions"] == 4  # a at 1.arrow, b, c (2 rows)
    store.forget_segments([("m", "1", "2.arrow")])
    assert store.counts("m")["1"]["predictions"] == 2  # a and b stay
    store.forget_segments([("m", "1", "1.arrow"), ("m", "1", "gone.arrow")])
    assert store.counts("m") == {}
    store.close()
