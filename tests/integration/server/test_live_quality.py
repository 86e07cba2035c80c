"""Live quality and alerts through a real server: feedback → windows → gauges → webhooks."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shipyard.config import Settings
from shipyard.metrics import classification_metrics, regression_metrics
from shipyard.registry import ModelRegistry
from tests.unit.monitoring.test_alerts import Receiver

from .conftest import server_settings, spawn_server, start_server, stop_server
from .test_tfserving import _register_iris, _register_linear

WINDOWS = ["1h", "last_10"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _alerts_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(
        f"""
webhooks = ["{url}"]
repeat_interval_s = 3600
retries = 2
backoff_s = 0.05

[[rules]]
name = "accuracy-low"
metric = "quality.accuracy"
window = "last_10"
op = "<"
threshold = 0.9
severity = "critical"
"""
    )
    return path


def _settings(home: Path, alerts: Path | None) -> Settings:
    monitoring: dict[str, Any] = {"quality_windows": WINDOWS, "alerts_interval_s": 0.05}
    if alerts is not None:
        monitoring["alerts_file"] = str(alerts)
    return server_settings(home, monitoring=monitoring)


def _infer(c: httpx.Client, model: str, x: np.ndarray, request_id: str) -> list[Any]:
    body = {
        "inputs": [
            {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    r = c.post(f"/v2/models/{model}/infer", json=body, headers={"x-request-id": request_id})
    assert r.status_code == 200, r.text
    return r.json()["outputs"][0]["data"]


def _wait(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _gauges(text: str, model: str, window: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        labels = (f'model="{model}"', f'window="{window}"')
        if line.startswith("shipyard_live_quality{") and all(x in line for x in labels):
            metric = line.split('metric="', 1)[1].split('"', 1)[0]
            out[metric] = float(line.rsplit(" ", 1)[1])
    return out


def test_wrong_labels_fire_one_alert_and_right_ones_resolve_it(
    home: Path,
    tmp_path: Path,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.datasets import load_iris

    from shipyard.cli.main import main

    reg = ModelRegistry.open(_settings(home, None))
    _register_iris(reg, tmp_path)
    reg.update_metadata("iris:1", metrics={"accuracy": 0.97})
    reg.close()
    settings = _settings(home, _alerts_file(tmp_path, receiver.url))
    x, y = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))[:20]
    xs, ys = x[order].astype(np.float32), [int(v) for v in y[order]]
    server = start_server(["iris"], settings)
    try:
        with httpx.Client(base_url=server.http) as c:
            preds = [_infer(c, "iris", xs[i : i + 1], f"q{i}")[0] for i in range(20)]
            # the first ten get wrong labels: accuracy over last_10 is 0
            wrong = [{"request_id": f"q{i}", "label": (preds[i] + 1) % 3} for i in range(10)]
            assert c.post("/v2/models/iris/feedback", json=wrong).json()["accepted"] == 10
            _wait(lambda: len(receiver.received) >= 1)
            time.sleep(0.5)  # ten more evaluations, condition still holding: no repeat
            assert [e["status"] for e in receiver.received] == ["firing"]
            firing = receiver.received[0]
            assert firing["rule"] == "accuracy-low" and firing["model"] == "iris"
            assert firing["version"] == "1" and firing["metric"] == "quality.accuracy@last_10"
            assert firing["value"] == 0.0 and firing["severity"] == "critical"
            firing_gauge = (
                'shipyard_alerts_firing{model="iris",rule="accuracy-low",'
                'severity="critical",version="1"} 1.0'
            )
            assert firing_gauge in c.get("/metrics").text
            # the next ten, predicted later, get their true labels: last_10 is all right
            right = [{"request_id": f"q{i}", "label": ys[i]} for i in range(10, 20)]
            assert c.post("/v2/models/iris/feedback", json=right).json()["accepted"] == 10
            _wait(lambda: len(receiver.received) >= 2)
            time.sleep(0.3)
            assert [e["status"] for e in receiver.received] == ["firing", "resolved"]
            assert receiver.received[1]["fingerprint"] == firing["fingerprint"]
            metrics_text = c.get("/metrics").text
            status = c.get("/v2/models/iris/monitoring").json()
    finally:
        stop_server(server)

    truth = [(preds[i] + 1) % 3 for i in range(10)] + ys[10:]
    want_1h = classification_metrics(truth, preds)
    want_10 = classification_metrics(truth[10:], preds[10:])
    gauges = _gauges(metrics_text, "iris", "1h")
    assert gauges["accuracy"] == pytest.approx(want_1h["accuracy"])
    assert gauges["f1_macro"] == pytest.approx(want_1h["f1_macro"])
    assert gauges["precision_macro"] == pytest.approx(want_1h["precision_macro"])
    assert _gauges(metrics_text, "iris", "last_10")["accuracy"] == pytest.approx(
        want_10["accuracy"]
    )
    assert 'shipyard_live_quality_rows{model="iris",version="1",window="1h"} 20.0' in metrics_text
    live = status["versions"]["1"]["live"]
    assert {"all", "1h", "last_10", "last_1000"} <= set(live)
    assert live["1h"]["n"] == 20 and live["last_10"]["n"] == 10
    assert live["1h"]["accuracy"] == pytest.approx(want_1h["accuracy"])
    assert live["1h"]["confusion_matrix"] == want_1h["confusion_matrix"]
    assert live["last_10"]["accuracy"] == pytest.approx(want_10["accuracy"])
    assert status["versions"]["1"]["offline"] == {"accuracy": 0.97}

    # a restart keeps live quality: seeded from the feedback store
    server = start_server(["iris"], settings)
    try:
        with httpx.Client(base_url=server.http) as c:
            again = c.get("/v2/models/iris/monitoring").json()["versions"]["1"]["live"]
            metrics_again = c.get("/metrics").text
    finally:
        stop_server(server)
    assert again["1h"] == live["1h"] and again["last_10"] == live["last_10"]
    assert _gauges(metrics_again, "iris", "1h") == pytest.approx(gauges, nan_ok=True)

    # the CLI, without a server, builds the same windows from the store
    monkeypatch.setenv("SHIPYARD_HOME", str(home))
    monkeypatch.setenv("SHIPYARD_MONITORING__QUALITY_WINDOWS", json.dumps(WINDOWS))
    assert main(["monitor", "status", "iris", "--json"]) == 0
    cli_live = json.loads(capsys.readouterr().out)["versions"]["1"]["live"]
    assert cli_live["1h"] == live["1h"] and cli_live["last_10"] == live["last_10"]
    assert main(["monitor", "status", "iris"]) == 0
    table = capsys.readouterr().out
    assert "1h" in table and "last_10" in table and "offline evaluation" in table


def test_a_regressor_gets_mae_and_rmse(home: Path, tmp_path: Path) -> None:
    settings = _settings(home, None)
    reg = ModelRegistry.open(settings)
    _register_linear(reg, tmp_path)
    reg.close()
    xs = np.random.default_rng(3).normal(size=(6, 2)).astype(np.float32)
    truth = [float(v) for v in xs @ np.array([2.0, -1.0]) + 0.5 + np.arange(6) * 0.1]
    server = start_server(["lin"], settings)
    try:
        with httpx.Client(base_url=server.http) as c:
            preds = [_infer(c, "lin", xs[i : i + 1], f"l{i}")[0] for i in range(6)]
            labels = [{"request_id": f"l{i}", "label": truth[i]} for i in range(6)]
            assert c.post("/v2/models/lin/feedback", json=labels).json()["accepted"] == 6
            live = c.get("/v2/models/lin/monitoring").json()["versions"]["1"]["live"]
            metrics_text = c.get("/metrics").text
    finally:
        stop_server(server)
    want = regression_metrics(truth, preds)
    assert live["1h"]["n"] == 6
    assert live["1h"]["mae"] == pytest.approx(want["mae"])
    assert live["last_10"]["rmse"] == pytest.approx(want["rmse"])
    gauges = _gauges(metrics_text, "lin", "1h")
    assert gauges["mae"] == pytest.approx(want["mae"])
    assert gauges["rmse"] == pytest.approx(want["rmse"])


def test_serve_with_a_bad_alerts_file_refuses_to_start(home: Path, tmp_path: Path) -> None:
    reg = ModelRegistry.open(_settings(home, None))
    _register_iris(reg, tmp_path)
    reg.close()
    bad = tmp_path / "alerts.toml"
    bad.write_text('[[rules]]\nname = "acc"\nmetric = "quality.accuracy"\nop = "<="\n')
    proc, _ = spawn_server(home, "iris", "--alerts", str(bad))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "error[config-error]" in out and "rule 'acc', field 'op'" in out
    assert "Traceback" not in out
    proc, _ = spawn_server(home, "iris", "--alerts", str(tmp_path / "missing.toml"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "does not exist" in out


def test_serve_with_alerts_fires_to_a_webhook_and_drains_on_sigterm(
    home: Path, tmp_path: Path, receiver: Receiver
) -> None:
    reg = ModelRegistry.open(_settings(home, None))
    _register_iris(reg, tmp_path)
    reg.close()
    alerts = tmp_path / "alerts.toml"
    alerts.write_text(
        f'interval_s = 0.05\nwebhooks = ["{receiver.url}"]\n'
        '[[rules]]\nname = "acc"\nmetric = "quality.accuracy"\nop = "<"\nthreshold = 0.5\n'
        # p99 over each evaluation interval: set by a request, unset by an idle interval
        '[[rules]]\nname = "slow"\nmetric = "latency.p99_ms"\nop = ">"\nthreshold = 0\n'
    )
    proc, url = spawn_server(home, "iris", "--alerts", str(alerts))
    try:
        _wait(lambda: _live(url), timeout_s=60)
        x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        with httpx.Client(base_url=url) as c:
            (pred,) = _infer(c, "iris", x, "s1")
            body = [{"request_id": "s1", "label": (pred + 1) % 3}]
            assert c.post("/v2/models/iris/feedback", json=body).json()["accepted"] == 1

        def of(rule: str) -> list[dict[str, Any]]:
            return [e for e in receiver.received if e["rule"] == rule]

        _wait(lambda: len(of("acc")) == 1 and len(of("slow")) == 2)
        (acc,) = of("acc")
        assert acc["status"] == "firing" and acc["value"] == 0.0
        assert acc["metric"] == "quality.accuracy"  # the first window
        slow = of("slow")
        assert [e["status"] for e in slow] == ["firing", "resolved"]
        assert 0 < slow[0]["value"] < 5000 and slow[1]["value"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Alerts: 2 rules" in out and "Stopped" in out


def _live(url: str) -> bool:
    try:
        return httpx.get(url + "/v2/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
