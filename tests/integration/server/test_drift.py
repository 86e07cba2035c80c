"""Drift and estimated quality in GET /v2/models/{name}/monitoring, through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.registry import ModelRegistry

from .conftest import RunningServer, register_tiny, server_settings, start_server, stop_server
from .test_tfserving import FEATURES, _register_iris


def _iris_rows(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), n)
    rows = x[idx] + rng.normal(0, 0.05, (n, 4))
    rows[:, 3] += shift
    return rows.astype(np.float32), y[idx]


@pytest.fixture
def iris(home: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """`iris` (with a reference of 3000 rows) and `tiny` (without one), served."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shipyard.api import monitor_set_reference

    settings = server_settings(
        home, monitoring={"drift_cache_s": 0.0, "drift_ks_p_value": 0.001, "drift_window": 600}
    )
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    register_tiny(reg, tmp_path, "tiny")
    x, _ = _iris_rows(3000, seed=1)
    data = tmp_path / "reference.parquet"
    pq.write_table(pa.table({f: x[:, i] for i, f in enumerate(FEATURES)}), data)
    monitor_set_reference("iris", data, settings=settings, registry=reg)
    reg.close()
    server = start_server(["iris", "tiny"], settings)
    yield server
    stop_server(server)


def _send(c: httpx.Client, x: np.ndarray, prefix: str, rows: int = 20) -> None:
    for i in range(0, len(x), rows):
        xb = x[i : i + rows]
        body = {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(xb.shape),
                    "datatype": "FP32",
                    "data": xb.ravel().tolist(),
                }
            ]
        }
        r = c.post("/v2/models/iris/infer", json=body, headers={"x-request-id": f"{prefix}-{i}"})
        assert r.status_code == 200, r.text


def test_the_endpoint_reports_drift_and_cbpe_beside_measured_quality(iris: RunningServer) -> None:
    with httpx.Client(base_url=iris.http, timeout=30) as c:
        x, y = _iris_rows(600, seed=2)
        _send(c, x, "same")
        # labels for the first 200 rows arrive: measured quality appears beside the estimate
        labels = [{"request_id": f"same-{i - i % 20}", "row": i % 20, "label": int(y[i])}
                  for i in range(200)]  # fmt: skip
        assert c.post("/v2/models/iris/feedback", json=labels).json()["accepted"] == 200
        started = time.perf_counter()
        status = c.get("/v2/models/iris/monitoring").json()
        took = time.perf_counter() - started
        v1 = status["versions"]["1"]
        drift = v1["drift"]
        assert drift["reference"]["rows"] == 3000
        assert drift["reference"]["features"] == list(FEATURES)
        assert drift["n_current"] == 600  # flushed before reading: every row served
        assert drift["drifted_features"] == [] and drift["prediction_drifted"] is False
        est = v1["estimated"]
        assert est["available"] and est["n"] == 600
        assert 0.5 < est["accuracy"] <= 1.0
        labelled = est["labelled"]
        assert labelled["n"] == 200
        assert labelled["measured"]["accuracy"] == pytest.approx(v1["live"]["all"]["accuracy"])
        assert set(labelled["difference"]) == {
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
        }
        assert took < 5.0

        shifted, _ = _iris_rows(600, seed=3, shift=1.5)  # petal width moves
        _send(c, shifted, "shifted")
        loud = c.get("/v2/models/iris/monitoring").json()["versions"]["1"]["drift"]
        assert loud["drifted_features"] == ["petal_width"]
        assert loud["prediction_drifted"] is True


def test_a_model_without_a_reference_gets_the_hint(iris: RunningServer) -> None:
    with httpx.Client(base_url=iris.http, timeout=30) as c:
        x = np.ones((2, 4), dtype=np.float32)
        body = {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        assert c.post("/v2/models/tiny/infer", json=body).status_code == 200
        v1 = c.get("/v2/models/tiny/monitoring").json()["versions"]["1"]
    assert v1["drift"] == {
        "reference": None,
        "hint": "shipyard monitor set-reference tiny:1 --data FILE",
    }
    assert v1["estimated"]["available"] is False
