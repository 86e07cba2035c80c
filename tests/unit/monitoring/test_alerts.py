"""Alert rules: state machine, dedup, resolve, webhooks with retries against a real receiver."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipyard._utils.clock import ManualClock
from shipyard.errors import ConfigError, ShipyardError
from shipyard.monitoring.alerts import (
    AlertEngine,
    AlertsConfig,
    WebhookSender,
    load_alerts_config,
    parse_alerts_config,
)
from shipyard.monitoring.metrics import ServerMetrics


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that answers 500 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


RULE = {
    "name": "acc-low",
    "metric": "quality.accuracy",
    "window": "5m",
    "op": "<",
    "threshold": 0.9,
    "for_s": 60,
    "severity": "critical",
    "labels": {"team": "ml"},
}


class Values:
    def __init__(self) -> None:
        self.acc: float | None = 0.95

    def __call__(self) -> dict[tuple[str, str], dict[str, float | None]]:
        return {("iris", "3"): {"quality.accuracy@5m": self.acc}}


def _engine(
    values: Values, clock: ManualClock, **cfg: Any
) -> tuple[AlertEngine, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    class Capture(WebhookSender):
        def submit(self, event: dict[str, Any]) -> None:
            sent.append(event)

    config = parse_alerts_config({"rules": [RULE], **cfg})
    return AlertEngine(config, values, clock=clock, sender=Capture([])), sent


def test_pending_then_firing_then_resolved(caplog: pytest.LogCaptureFixture) -> None:
    clock, values = ManualClock(), Values()
    engine, sent = _engine(values, clock)
    key = ("acc-low", "iris", "3")
    assert engine.evaluate() == [] and engine.states()[key] == "inactive"
    values.acc = 0.8
    assert engine.evaluate() == [] and engine.states()[key] == "pending"
    clock.advance(30)
    assert engine.evaluate() == [] and engine.states()[key] == "pending"
    clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="shipyard.alerts"):
        events = engine.evaluate()
    assert [e["status"] for e in events] == ["firing"] and engine.states()[key] == "firing"
    assert events[0]["value"] == 0.8 and events[0]["labels"] == {"team": "ml"}
    assert "acc-low firing" in caplog.text
    values.acc = 0.95
    events = engine.evaluate()
    assert [e["status"] for e in events] == ["resolved"] and events[0]["ends_at"] is not None
    assert engine.states()[key] == "inactive"
    assert [e["status"] for e in sent] == ["firing", "resolved"]


def test_pending_that_recovers_never_fires() -> None:
    clock, values = ManualClock(), Values()
    engine, sent = _engine(values, clock)
    values.acc = 0.5
    engine.evaluate()
    clock.advance(59)
    values.acc = 0.99
    engine.evaluate()
    values.acc = 0.5
    clock.advance(10)
    engine.evaluate()  # pending starts again from here
    clock.advance(50)
    assert engine.evaluate() == []
    assert sent == []


def test_dedup_and_repeat_interval() -> None:
    clock, values = ManualClock(), Values()
    engine, sent = _engine(values, clock, repeat_interval_s=600)
    values.acc = 0.1
    engine.evaluate()
    clock.advance(60)
    engine.evaluate()
    for _ in range(9):
        clock.advance(60)
        engine.evaluate()  # still firing: not sent again before 600 s
    assert len(sent) == 1
    clock.advance(60)
    engine.evaluate()
    assert [e["status"] for e in sent] == ["firing", "firing"]


def test_none_value_never_fires() -> None:
    clock, values = ManualClock(), Values()
    engine, sent = _engine(values, clock, rules=[{**RULE, "for_s": 0}])
    values.acc = None
    engine.evaluate()
    assert sent == [] and engine.states()[("acc-low", "iris", "3")] == "inactive"


def test_webhook_retries_then_delivers(receiver: Receiver) -> None:
    receiver.fail_first = 2
    clock, values = ManualClock(), Values()
    cfg = parse_alerts_config(
        {"rules": [{**RULE, "for_s": 0}], "webhooks": [receiver.url], "backoff_s": 0.01}
    )
    metrics = ServerMetrics()
    engine = AlertEngine(cfg, values, clock=clock, metrics=metrics)
    values.acc = 0.5
    engine.evaluate()
    values.acc = 0.99
    engine.evaluate()
    assert engine.sender is not None and engine.sender.flush(10)
    assert receiver.attempts == 4  # two failures, then firing, then resolved
    assert [e["status"] for e in receiver.received] == ["firing", "resolved"]
    first = receiver.received[0]
    assert first["rule"] == "acc-low" and first["model"] == "iris" and first["version"] == "3"
    assert first["metric"] == "quality.accuracy@5m" and first["threshold"] == 0.9
    assert engine.sender.failed == 0
    text = metrics.exposition().decode()
    assert (
        'shipyard_alerts_firing{model="iris",rule="acc-low",severity="critical",version="3"} 0.0'
        in text
    )
    engine.stop()


def test_webhook_down_never_blocks_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    dead = Receiver()
    url = dead.url
    dead.close()  # nothing listens there any more
    clock, values = ManualClock(), Values()
    cfg = parse_alerts_config(
        {
            "rules": [{**RULE, "for_s": 0}],
            "webhooks": [url],
            "retries": 2,
            "backoff_s": 0.01,
            "timeout_s": 1,
        }
    )
    metrics = ServerMetrics()
    engine = AlertEngine(cfg, values, clock=clock, metrics=metrics)
    values.acc = 0.5
    with caplog.at_level(logging.ERROR, logger="shipyard.alerts"):
        assert [e["status"] for e in engine.evaluate()] == ["firing"]
        assert engine.sender is not None and engine.sender.flush(10)
    assert engine.sender.failed == 1 and engine.sender.delivered == 0
    assert "lost" in caplog.text
    assert f'shipyard_alert_webhook_failures_total{{url="{url}"}} 1.0' in (
        metrics.exposition().decode()
    )
    engine.stop()


def test_continuous_evaluation_thread(receiver: Receiver) -> None:
    values = Values()
    values.acc = 0.2
    cfg = parse_alerts_config(
        {"rules": [{**RULE, "for_s": 0}], "webhooks": [receiver.url], "interval_s": 0.02}
    )
    engine = AlertEngine(cfg, values)
    engine.start()
    try:
        for _ in range(200):
            if receiver.received:
                break
            threading.Event().wait(0.02)
    finally:
        engine.stop()
    assert [e["status"] for e in receiver.received] == ["firing"]  # deduplicated


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({**RULE, "op": ">="}, "op"),
        ({**RULE, "for_s": -1}, "for_s"),
        ({k: v for k, v in RULE.items() if k != "threshold"}, "threshold"),
        ({**RULE, "metric": "accuracy"}, "metric"),
        ({**RULE, "colour": "red"}, "colour"),
    ],
)
def test_bad_rule_names_rule_and_field(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_alerts_config({"rules": [rule]})
    assert isinstance(info.value, ShipyardError)
    assert "'acc-low'" in info.value.message and f"'{field}'" in info.value.message
    assert info.value.hint


def test_duplicate_rule_names() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_alerts_config({"rules": [RULE, RULE]})


def test_load_toml(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(
        'webhooks = ["http://127.0.0.1:1/x"]\n'
        "[[rules]]\n"
        'name = "p99"\nmetric = "latency.p99_ms"\nop = ">"\nthreshold = 250\nfor_s = 120\n',
        encoding="utf-8",
    )
    cfg = load_alerts_config(path)
    assert isinstance(cfg, AlertsConfig)
    assert cfg.rules[0].key == "latency.p99_ms" and cfg.rules[0].for_s == 120
    with pytest.raises(ConfigError, match="does not exist"):
        load_alerts_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="TOML"):
        load_alerts_config(bad)
