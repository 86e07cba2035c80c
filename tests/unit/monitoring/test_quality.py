"""Live quality windows: eviction by time and count, same numbers as shipyard.metrics/sklearn."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from sklearn import metrics as skm

from shipyard._utils.clock import ManualClock
from shipyard.errors import InvalidInputError
from shipyard.monitoring.metrics import ServerMetrics
from shipyard.monitoring.quality import LiveQuality, parse_window


def test_parse_window() -> None:
    assert parse_window("5m").seconds == 300
    assert parse_window("1h").seconds == 3600
    assert parse_window("last_100").count == 100
    with pytest.raises(InvalidInputError):
        parse_window("5 minutes")


def test_time_window_evicts_old_rows() -> None:
    clock = ManualClock(1000.0)
    q = LiveQuality("classification", ["60s", "10m"], clock=clock)
    q.add_many([1, 1], [1, 0])  # at t=1000, one right
    clock.advance(120)
    q.add_many([0, 0, 0], [0, 0, 0])  # at t=1120, all right
    snap = q.snapshot()["windows"]
    assert snap["60s"]["n"] == 3 and snap["60s"]["accuracy"] == 1.0
    assert snap["10m"]["n"] == 5 and snap["10m"]["accuracy"] == pytest.approx(4 / 5)
    clock.advance(601)  # everything older than 10 min is gone, from memory too
    assert q.snapshot()["windows"]["10m"]["n"] == 0
    assert q.snapshot()["windows"]["10m"]["accuracy"] is None
    assert len(q) == 0


def test_count_window_and_capacity_bound() -> None:
    q = LiveQuality("classification", ["last_3"], capacity=5, clock=ManualClock())
    q.add_many([0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1])
    w = q.window_metrics("last_3")
    assert w["n"] == 3 and w["accuracy"] == 1.0
    assert len(q) == 5  # ring buffer bound
    with pytest.raises(InvalidInputError):
        LiveQuality("classification", ["last_10"], capacity=5)


def test_classification_equals_offline_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 3, 400))
    q = LiveQuality("classification", ["last_300"], clock=ManualClock())
    q.add_many(pred.tolist(), y.tolist())
    w = q.window_metrics("last_300")
    yt, yp = y[-300:], pred[-300:]
    assert w["n"] == 300
    assert w["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    assert w["f1_macro"] == pytest.approx(skm.f1_score(yt, yp, average="macro"))
    assert w["precision_macro"] == pytest.approx(skm.precision_score(yt, yp, average="macro"))
    assert w["recall_macro"] == pytest.approx(skm.recall_score(yt, yp, average="macro"))
    assert w["confusion_matrix"] == skm.confusion_matrix(yt, yp).tolist()
    per = skm.f1_score(yt, yp, average=None)
    assert [w["per_class"][str(k)]["f1"] for k in range(3)] == pytest.approx(per.tolist())
    assert w["roc_auc"] is None  # no scores given
    json.dumps(q.snapshot())


def test_binary_auc_and_null_with_one_class() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    q = LiveQuality("classification", ["last_200", "last_5"], clock=ManualClock())
    q.add_many((score > 0.5).astype(int).tolist(), y.tolist(), scores=score.tolist())
    w = q.window_metrics("last_200")
    assert w["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    q2 = LiveQuality("classification", ["last_5"], clock=ManualClock())
    for _ in range(5):
        q2.add(1, 1, score=0.9)
    snap = q2.snapshot()
    assert snap["windows"]["last_5"]["roc_auc"] is None
    assert "null" in json.dumps(snap)


def test_regression_equals_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.3, size=50)
    q = LiveQuality("regression", ["1h"], clock=ManualClock())
    q.add_many(p.tolist(), y.tolist())
    w = q.window_metrics("1h")
    assert w["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert w["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert w["r2"] == pytest.approx(skm.r2_score(y, p))
    empty = LiveQuality("regression", ["1h"], clock=ManualClock()).window_metrics("1h")
    assert empty == {"n": 0, "mae": None, "mse": None, "rmse": None, "r2": None}


def test_thread_safety_smoke() -> None:
    q = LiveQuality("classification", ["last_500", "1h"], capacity=1000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                q.snapshot()
        except BaseException as exc:  # pragma: no cover - the failure we look for
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(2000):
        q.add(i % 2, i % 2, score=0.7 if i % 2 else 0.2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert q.total == 2000 and len(q) == 1000
    assert q.window_metrics("last_500")["accuracy"] == 1.0


def test_values_and_prometheus_gauges_read_at_scrape_time() -> None:
    clock = ManualClock(100.0)
    q = LiveQuality("classification", ["5m", "last_10"], clock=clock)
    q.add_many([1, 0, 1, 1], [1, 0, 0, 1])
    vals = q.values()
    assert vals["quality.accuracy"] == 0.75 and vals["quality.accuracy@last_10"] == 0.75
    assert vals["quality.f1[0]@5m"] == pytest.approx(
        skm.f1_score([1, 0, 0, 1], [1, 0, 1, 1], average=None)[0]
    )
    m = ServerMetrics()
    m.watch_quality(lambda: [("iris", "3", q.snapshot())])
    text = m.exposition().decode()
    line = 'shipyard_live_quality{metric="accuracy",model="iris",version="3",window="5m"} 0.75'
    assert line in text
    assert 'metric="roc_auc",model="iris",version="3",window="5m"} NaN' in text
    assert 'shipyard_live_quality_rows{model="iris",version="3",window="last_10"} 4.0' in text
    # confusion: true 0 predicted 1 once; per-class recall of class 0 is 1/2
    assert (
        'shipyard_live_confusion{model="iris",predicted="1",true="0",version="3",window="5m"} 1.0'
        in text
    )
    assert (
        'shipyard_live_quality_class{class="0",metric="recall",model="iris",version="3",'
        'window="5m"} 0.5' in text
    )
    # a time window empties as time passes, with no new label: the scrape sees it
    clock.advance(301)
    text = m.exposition().decode()
    assert 'shipyard_live_quality_rows{model="iris",version="3",window="5m"} 0.0' in text
    assert 'shipyard_live_quality_rows{model="iris",version="3",window="last_10"} 4.0' in text


def test_a_late_label_lands_at_its_prediction_time() -> None:
    clock = ManualClock(1000.0)
    q = LiveQuality("classification", ["60s", "last_2"], clock=clock)
    q.add(1, 1, at=990.0)
    q.add(0, 0, at=995.0)
    q.add(1, 0, at=900.0)  # labelled last, predicted first: older than both
    assert q.window_metrics("last_2")["accuracy"] == 1.0  # the two newest predictions
    assert q.window_metrics("60s")["n"] == 2
    assert len(q) == 3  # a count window keeps rows older than the time windows


def test_count_windows_keep_old_rows_and_time_only_windows_drop_them() -> None:
    clock = ManualClock(10_000.0)
    q = LiveQuality("classification", ["1h", "last_5"], clock=clock)
    q.add_many([1, 1], [1, 1], at=1.0)  # labelled hours after the predictions
    assert q.window_metrics("last_5")["n"] == 2 and q.window_metrics("1h")["n"] == 0
    only_time = LiveQuality("classification", ["1h"], clock=clock)
    only_time.add_many([1, 1], [1, 1], at=1.0)
    assert len(only_time) == 0 and only_time.max_age_s == 3600
    assert q.max_age_s is None


def test_a_keyed_row_is_replaced_not_counted_twice() -> None:
    q = LiveQuality("classification", ["last_10"], clock=ManualClock())
    q.add_many([1, 1, 0], [0, 1, 0], at=[1.0, 2.0, 2.0], keys=[("a", 0), ("b", 0), ("b", 1)])
    assert q.window_metrics("last_10")["accuracy"] == pytest.approx(2 / 3)
    q.add(1, 1, at=1.0, key=("a", 0))  # a corrected label
    w = q.window_metrics("last_10")
    assert w["n"] == 3 and w["accuracy"] == 1.0 and q.total == 3
    q2 = LiveQuality("classification", ["last_2"], capacity=2, clock=ManualClock())
    q2.add_many([0, 0, 0], [0, 0, 0], at=[1.0, 2.0, 3.0], keys=["x", "y", "z"])
    q2.add(1, 0, at=1.0, key="x")  # its first event was evicted: it comes back as new, oldest
    assert len(q2) == 2 and q2.window_metrics("last_2")["accuracy"] == 1.0


def test_mismatched_keys_are_refused() -> None:
    q = LiveQuality("classification", ["last_10"], clock=ManualClock())
    with pytest.raises(InvalidInputError, match="same length"):
        q.add_many([1, 1], [1, 1], keys=["a"])
