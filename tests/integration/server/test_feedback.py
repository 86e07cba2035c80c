"""Feedback and live quality through a real server: labels joined to logged predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.registry import ModelRegistry

from .conftest import RunningServer, server_settings, start_server, stop_server
from .test_tfserving import _register_iris


@pytest.fixture
def iris(home: Path, tmp_path: Path) -> Iterator[RunningServer]:
    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    reg.update_metadata("iris:1", metrics={"accuracy": 0.97})
    reg.close()
    server = start_server(["iris"], settings)
    yield server
    stop_server(server)


def _infer(c: httpx.Client, x: np.ndarray, request_id: str, body_id: str | None = None) -> list:
    body = {
        "inputs": [
            {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    if body_id:
        body["id"] = body_id
    r = c.post("/v2/models/iris/infer", json=body, headers={"x-request-id": request_id})
    assert r.status_code == 200
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return out["label"]


def test_feedback_joins_labels_and_live_quality_matches_them(iris: RunningServer) -> None:
    from sklearn.datasets import load_iris

    from shipyard.metrics import classification_metrics

    x, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(x))[:40]
    xs, ys = x[idx].astype(np.float32), y[idx]
    with httpx.Client(base_url=iris.http) as c:
        preds = []
        for i in range(0, 40, 4):  # 10 requests of 4 rows
            preds += _infer(c, xs[i : i + 4], f"req-{i}")
        keyed = _infer(c, xs[:1], "ignored", body_id="client-key-1")
        # labelled at once: the log has not flushed yet, the endpoint flushes on a miss
        labels = [
            {"request_id": f"req-{i - i % 4}", "row": i % 4, "label": int(ys[i])} for i in range(40)
        ]
        labels += [
            {"key": "client-key-1", "label": int(ys[0])},
            {"request_id": "ghost", "label": 1},
        ]
        r = c.post("/v2/models/iris/feedback", json={"labels": labels})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "accepted": 41,
            "unknown": [{"index": 41, "request_id": "ghost", "row": 0}],
        }
        status = c.get("/v2/models/iris/monitoring").json()
    v1 = status["versions"]["1"]
    assert v1["labelled"] == 41 and v1["logged"] >= 41
    want = classification_metrics([int(v) for v in ys] + [int(ys[0])], preds + keyed)
    live = v1["live"]["all"]
    assert live["n"] == 41
    assert live["accuracy"] == pytest.approx(want["accuracy"])
    assert live["f1_macro"] == pytest.approx(want["f1_macro"])
    assert v1["offline"] == {"accuracy": 0.97}
    assert status["prediction_log"]["dropped"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid-data"),
        (b'{"labels": []}', 400, "invalid-data"),
        (b'[{"label": 1}]', 400, "invalid-data"),
    ],
)
def test_bad_feedback_is_400_with_a_code(
    iris: RunningServer, body: bytes, status: int, code: str
) -> None:
    r = httpx.post(iris.http + "/v2/models/iris/feedback", content=body)
    assert r.status_code == status
    assert r.json()["code"] == code and r.json()["error"]


def test_feedback_for_an_unknown_model_is_404(iris: RunningServer) -> None:
    r = httpx.post(iris.http + "/v2/models/ghost/feedback", json=[{"request_id": "a", "label": 1}])
    assert r.status_code == 404 and r.json()["code"] == "model-not-found"
    assert httpx.get(iris.http + "/v2/models/ghost/monitoring").status_code == 404


def test_feedback_body_over_the_limit_is_413(iris: RunningServer) -> None:
    limit = iris.settings.server.max_body_bytes
    r = httpx.post(
        iris.http + "/v2/models/iris/feedback",
        content=b"[" + b" " * (limit + 10) + b"]",
    )
    assert r.status_code == 413


def test_cli_feedback_from_a_late_labels_file_and_status(
    iris: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    from sklearn.datasets import load_iris

    from shipyard.cli.main import main
    from shipyard.metrics import classification_metrics

    x, y = load_iris(return_X_y=True)
    xs, ys = x[::10].astype(np.float32), y[::10]  # 15 rows
    with httpx.Client(base_url=iris.http) as c:
        preds = [_infer(c, xs[i : i + 1], f"late-{i}")[0] for i in range(len(xs))]
    time.sleep(2.5)  # the server's log flushes on its own (every second)
    labels = tmp_path / "labels.csv"
    lines = ["request_id,row,label"] + [f"late-{i},0,{int(v)}" for i, v in enumerate(ys)]
    labels.write_text("\n".join([*lines, "late-999,0,1"]) + "\n")
    monkeypatch.setenv("SHIPYARD_HOME", str(iris.settings.home))
    assert main(["monitor", "feedback", "iris", "--file", str(labels), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accepted"] == len(xs)
    assert result["unknown"] == [{"index": len(xs), "request_id": "late-999", "row": 0}]
    assert main(["monitor", "status", "iris", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["versions"]["1"]
    want = classification_metrics([int(v) for v in ys], preds)
    assert status["labelled"] == len(xs)
    assert status["live"]["all"]["accuracy"] == pytest.approx(want["accuracy"])
    assert status["offline"] == {"accuracy": 0.97}
    assert main(["monitor", "status", "iris"]) == 0  # the table renders
    assert "live quality" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,2\n")
    assert main(["monitor", "feedback", "iris", "--file", str(bad)]) != 0
    assert "must have a 'label' column and a 'request_id' or 'key'" in capsys.readouterr().err


def test_monitoring_report_renders_its_plots_offline(iris: RunningServer, tmp_path: Path) -> None:
    """The HTML report in headless Chromium: plots with their points, no request, no error."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sklearn.datasets import load_iris

    from shipyard.api import monitor_report, monitor_set_reference
    from tests.browser import load_page

    from .test_tfserving import FEATURES

    x, y = load_iris(return_X_y=True)
    reference = tmp_path / "reference.csv"
    pacsv.write_csv(pa.table({**{f: x[:, i] for i, f in enumerate(FEATURES)}, "y": y}), reference)
    monitor_set_reference("iris", reference, target="y", settings=iris.settings)
    order = np.random.default_rng(1).permutation(len(x))[:60]  # all three classes
    x, y = x[order], y[order]
    with httpx.Client(base_url=iris.http) as c:
        for i in range(0, 60, 3):
            _infer(c, x[i : i + 3].astype(np.float32), f"rep-{i}")
        labels = [
            {"request_id": f"rep-{i - i % 3}", "row": i % 3, "label": int(y[i])} for i in range(60)
        ]
        assert c.post("/v2/models/iris/feedback", json=labels).json()["accepted"] == 60
    out = tmp_path / "report.html"
    shown = monitor_report("iris", out, settings=iris.settings)
    assert shown["requests"] == 20 and shown["labelled"] == 60
    count = "document.querySelectorAll('#{} .point').length"
    page = load_page(
        out,
        expressions={
            "quality": count.format("plot-quality"),
            "traffic": count.format("plot-traffic"),
            "latency": count.format("plot-latency"),
            "cells": count.format("plot-confusion"),
            "cm_total": "[...document.querySelectorAll('#plot-confusion .point')]"
            ".reduce((s, e) => s + Number(e.dataset.value), 0)",
            "f1_bars": count.format("plot-f1"),
            "psi_bars": count.format("plot-drift-1"),
            "psi_values": "[...document.querySelectorAll('#plot-drift-1 .point')]"
            ".map(e => Number(e.dataset.value))",
            "psi_red": "[...document.querySelectorAll('#plot-drift-1 .point')]"
            ".filter(e => e.getAttribute('fill') === '#d62728').length",
            "p_bars": count.format("plot-drift-p-1"),
            "estimated": "[...document.querySelectorAll('#plot-estimated .point')]"
            ".map(e => e.dataset.series)",
        },
    )
    assert page.requests == [] and page.console_errors == []
    assert page.values["quality"] >= 1 and page.values["traffic"] >= 1
    assert page.values["latency"] >= 2  # p50 and p99 of at least one bucket
    assert page.values["cells"] == 9 and page.values["cm_total"] == 60
    assert page.values["f1_bars"] == 3
    # drift: a PSI bar and a KS bar per feature and per class probability
    drift = shown["status"]["versions"]["1"]["drift"]
    psi = [r for r in drift["features"] + drift["prediction"] if r["test"] == "psi"]
    assert page.values["psi_bars"] == page.values["p_bars"] == len(psi) == 4 + 3
    assert page.values["psi_values"] == pytest.approx([r["statistic"] for r in psi], rel=1e-5)
    assert page.values["psi_red"] == sum(bool(r["drifted"]) for r in psi)
    # estimated (CBPE) accuracy beside the measured one, over time
    assert {"estimated v1", "measured v1"} <= set(page.values["estimated"])
    assert not page.screenshot_blank()


def test_batched_requests_are_logged_each_with_its_own_rows(home: Path, tmp_path: Path) -> None:
    """Batches are logged as one entry; every request still gets exactly its rows back."""
    from concurrent.futures import ThreadPoolExecutor

    from shipyard.monitoring.predlog import iter_rows

    settings = server_settings(home, batching={"max_batch_size": 16, "max_wait_ms": 5})
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    reg.close()
    server = start_server(["iris"], settings)
    rng = np.random.default_rng(7)
    sent = {f"r{i}": rng.random((1 + i % 3, 4), dtype=np.float32) for i in range(96)}
    got: dict[str, list] = {}
    try:
        with httpx.Client(base_url=server.http) as c, ThreadPoolExecutor(8) as pool:
            for rid, labels in zip(
                sent, pool.map(lambda kv: _infer(c, kv[1], kv[0]), sent.items()), strict=True
            ):
                got[rid] = labels
            metrics = c.get("/metrics").text
    finally:
        stop_server(server)  # flushes the log
    sizes = {
        line.split(" ")[0].split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("shipyard_batch_size_") and 'model="iris"' in line
    }
    assert sizes["shipyard_batch_size_sum"] > sizes["shipyard_batch_size_count"]  # batched
    rows = list(iter_rows(settings.monitoring_dir, "iris"))
    assert sorted((r["request_id"], r["row"]) for r in rows) == sorted(
        (rid, i) for rid, x in sent.items() for i in range(len(x))
    )
    for r in rows:
        x = sent[r["request_id"]]
        assert r["rows"] == len(x)
        assert r["inputs"]["X"] == x[r["row"]].tolist()
        assert r["outputs"]["label"] == got[r["request_id"]][r["row"]]
        assert r["latency_ms"] > 0


def test_encrypted_prediction_log_through_a_server(home: Path, tmp_path: Path) -> None:
    import base64
    import os

    from shipyard.monitoring.predlog import iter_rows, keys_for, segment_paths

    key_file = tmp_path / "keys"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    settings = server_settings(
        home,
        monitoring={"encrypt": True},
        registry={"encryption_key_file": str(key_file)},
    )
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    reg.close()
    server = start_server(["iris"], settings)
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    try:
        with httpx.Client(base_url=server.http) as c:
            (label,) = _infer(c, x, "enc-1")
            r = c.post(
                "/v2/models/iris/feedback",
                json={"labels": [{"request_id": "enc-1", "label": label}]},
            )
            assert r.json() == {"accepted": 1, "unknown": []}
    finally:
        stop_server(server)
    (segment,) = segment_paths(settings.monitoring_dir)
    assert segment.read_bytes().startswith(b"SHPYENC1") and b"enc-1" not in segment.read_bytes()
    (row,) = iter_rows(settings.monitoring_dir, keys=keys_for(settings))
    assert row["request_id"] == "enc-1" and row["inputs"]["X"] == x[0].tolist()


def test_encryption_on_without_a_key_refuses_to_start(home: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    reg.close()
    env = {**os.environ, "SHIPYARD_HOME": str(home), "SHIPYARD_MONITORING__ENCRYPT": "true"}
    env.pop("SHIPYARD_ENCRYPTION_KEY", None)
    exe = str(Path(sys.executable).with_name("shipyard"))
    done = subprocess.run(
        [exe, "serve", "iris", "--port", "0", "--grpc-port", "0", "--management-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "segments need a key" in done.stderr and "Traceback" not in done.stderr
