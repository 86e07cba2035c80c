"""Live-quality tracker: fed joined feedback rows, seeded from the store, same as the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn import metrics as skm

from shipyard._utils.clock import ManualClock
from shipyard.errors import InvalidInputError
from shipyard.monitoring.feedback import FeedbackStore, parse_labels
from shipyard.monitoring.live import LiveQualityTracker, windows_from_rows
from shipyard.spec import TaskSchema, TaskType

NOW = 10_000.0
IRIS = TaskSchema(
    task=TaskType.CLASSIFICATION,
    class_labels=(0, 1, 2),
    label_output="label",
    scores_output="probabilities",
)
BINARY = TaskSchema(
    task=TaskType.CLASSIFICATION,
    class_labels=("no", "yes"),
    label_output="label",
    scores_output="p",
)
REGRESSION = TaskSchema(task=TaskType.REGRESSION, scores_output="y")


def _log(store: FeedbackStore, n: int, *, version: str = "1", start: float = NOW - 100) -> None:
    """``n`` one-row requests r0.. predicting label i % 3, predicted 1 s apart."""
    store.index_predictions(
        "m",
        version,
        [
            {
                "request_id": f"r{i}",
                "ts": start + i,
                "rows": 1,
                "outputs": {"label": [i % 3], "probabilities": [[0.2, 0.3, 0.5]]},
            }
            for i in range(n)
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    s = FeedbackStore.open(tmp_path)
    yield s
    s.close()


def _label(store: FeedbackStore, labels: dict[int, int]) -> list:
    items = [{"request_id": f"r{i}", "label": y} for i, y in labels.items()]
    return store.add_labels("m", parse_labels(items)).joined


def test_fed_rows_give_the_evaluation_metrics_per_window(store: FeedbackStore) -> None:
    tracker = LiveQualityTracker(["30s", "last_5"], 100, clock=ManualClock(NOW))
    tracker.track("m", "1", IRIS)
    _log(store, 90)
    truth = {i: (i % 3 if i % 4 else (i + 1) % 3) for i in range(90)}  # every 4th wrong
    assert tracker.feed("m", _label(store, truth)) == 90
    w = tracker.windows_of("m", "1")
    assert w is not None
    recent = [i for i in range(90) if NOW - 100 + i >= NOW - 30]  # predicted in the last 30 s
    assert w["30s"]["n"] == len(recent) == 20
    assert w["30s"]["accuracy"] == pytest.approx(
        skm.accuracy_score([truth[i] for i in recent], [i % 3 for i in recent])
    )
    last5 = list(range(85, 90))
    assert w["last_5"]["f1_macro"] == pytest.approx(
        skm.f1_score([truth[i] for i in last5], [i % 3 for i in last5], average="macro")
    )
    values = tracker.values()[("m", "1")]
    assert values["quality.accuracy@last_5"] == w["last_5"]["accuracy"]


def test_seeding_from_the_store_equals_what_feedback_fed(store: FeedbackStore) -> None:
    clock = ManualClock(NOW)
    fed = LiveQualityTracker(["1m", "last_10"], 50, clock=clock)
    fed.track("m", "1", IRIS)
    _log(store, 40)
    fed.feed("m", _label(store, {i: (i * 7) % 3 for i in range(0, 40, 2)}))
    fed.feed("m", _label(store, {i: (i * 5) % 3 for i in range(1, 40, 2)}))  # late, older
    fed.feed("m", _label(store, {4: 0, 38: 2}))  # corrections replace, as in the store
    seeded = LiveQualityTracker(["1m", "last_10"], 50, clock=clock)
    assert seeded.seed(store, "m", "1", IRIS) == 40
    assert seeded.windows_of("m", "1") == fed.windows_of("m", "1")
    from_rows = windows_from_rows(IRIS, store.labelled("m", "1"), ["1m", "last_10"], clock=clock)
    assert from_rows == fed.windows_of("m", "1")


def test_rows_of_untracked_versions_and_tasks_without_metrics_are_skipped(
    store: FeedbackStore,
) -> None:
    tracker = LiveQualityTracker(["last_10"], 10, clock=ManualClock(NOW))
    assert tracker.track("m", "1", TaskSchema(task=TaskType.OTHER)) is None
    _log(store, 3, version="2")
    assert tracker.feed("m", _label(store, {0: 0, 1: 1})) == 0
    assert tracker.tracked() == [] and tracker.windows_of("m", "2") is None
    assert windows_from_rows(TaskSchema(), [], ["last_10"]) is None


def test_binary_auc_and_regression_errors(store: FeedbackStore) -> None:
    store.index_predictions(
        "b",
        "1",
        [
            {
                "request_id": f"b{i}",
                "ts": NOW - i,
                "rows": 1,
                "outputs": {"label": ["yes" if p > 0.5 else "no"], "p": [[1 - p, p]]},
            }
            for i, p in enumerate([0.9, 0.8, 0.3, 0.6, 0.1, 0.4])
        ],
    )
    truth = ["yes", "yes", "no", "no", "no", "yes"]
    items = [{"request_id": f"b{i}", "label": y} for i, y in enumerate(truth)]
    rows = store.add_labels("b", parse_labels(items)).joined
    tracker = LiveQualityTracker(["last_10"], 10, clock=ManualClock(NOW))
    tracker.track("b", "1", BINARY)
    tracker.feed("b", rows)
    w = tracker.windows_of("b", "1")
    assert w is not None
    scores = [0.9, 0.8, 0.3, 0.6, 0.1, 0.4]
    assert w["last_10"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score([y == "yes" for y in truth], scores)
    )
    store.index_predictions(
        "r",
        "1",
        [
            {"request_id": f"x{i}", "ts": NOW, "rows": 1, "outputs": {"y": [[v]]}}
            for i, v in enumerate([1.0, 2.0, 4.0])
        ],
    )
    items = [{"request_id": f"x{i}", "label": v} for i, v in enumerate([1.5, 2.0, 3.0])]
    rows = store.add_labels("r", parse_labels(items)).joined
    reg = windows_from_rows(REGRESSION, rows, ["last_10"], clock=ManualClock(NOW))
    assert reg is not None
    assert reg["last_10"]["mae"] == pytest.approx(0.5)
    assert reg["last_10"]["rmse"] == pytest.approx(
        skm.root_mean_squared_error([1.5, 2, 3], [1, 2, 4])
    )


def test_malformed_outputs_are_skipped_not_raised(store: FeedbackStore) -> None:
    store.index_predictions(
        "m", "1", [{"request_id": "r0", "ts": NOW, "rows": 1, "outputs": {"other": [1]}}]
    )
    tracker = LiveQualityTracker(["last_10"], 10, clock=ManualClock(NOW))
    tracker.track("m", "1", REGRESSION)  # reads output "y", which the row lacks
    assert tracker.feed("m", _label(store, {0: 1})) == 0


def test_bad_windows_are_refused_up_front() -> None:
    with pytest.raises(InvalidInputError):
        LiveQualityTracker(["5 minutes"], 10)
    with pytest.raises(InvalidInputError, match="capacity"):
        LiveQualityTracker(["last_100"], 10)
