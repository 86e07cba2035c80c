"""Alert rules over live monitoring values, evaluated continuously, sent to the log and webhooks.

Rules come from a TOML file::

    repeat_interval_s = 3600          # re-send a still-firing alert this often
    webhooks = ["http://127.0.0.1:9000/hook"]

    [[rules]]
    name = "accuracy-low"
    metric = "quality.accuracy"       # or drift.share_drifted, latency.p99_ms, log.dropped_total
    window = "1h"                     # looked up as "quality.accuracy@1h"; omit for plain keys
    op = "<"
    threshold = 0.9
    for_s = 300                       # how long it must hold before it fires
    severity = "warning"
    labels = { team = "ml" }

A provider (any callable) returns the current values: ``{(model, version): {key: value}}``;
:meth:`shipyard.monitoring.quality.LiveQuality.values` gives the ``quality.*`` keys and
drift or latency plug in the same way. A value that is missing or ``None`` never satisfies
a condition.

States follow Prometheus Alertmanager: inactive → pending (condition true, for less than
``for_s``) → firing; a firing alert whose condition stops holding is resolved (and goes
back to inactive). Each firing/resolved event is logged on the ``shipyard.alerts`` logger
and POSTed as JSON to every webhook. Deduplication: a firing alert is sent once, then again
only after ``repeat_interval_s``; its resolution is sent once.

Webhook payload (one event per POST)::

    {"status": "firing" | "resolved", "rule": str, "model": str, "version": str,
     "metric": str, "value": float | null, "op": "<" | ">", "threshold": float,
     "severity": str, "labels": {str: str}, "fingerprint": str,
     "starts_at": unix seconds, "ends_at": unix seconds | null, "sent_at": unix seconds}

Delivery happens on a background thread (urllib; no extra dependency), so a webhook that
is down never blocks evaluation: each POST is retried with exponential backoff
(``backoff_s`` doubling up to ``backoff_max_s``, ``retries`` extra tries); a delivery that
fails every try, or that finds the bounded queue full, is logged and counted in
``shipyard_alert_webhook_failures``.

Imports: pydantic, shipyard.errors, shipyard._utils.clock (L0-L1), stdlib.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard._utils.clock import Clock, MonotonicClock
from shipyard.errors import ConfigError

__all__ = [
    "AlertEngine",
    "AlertRule",
    "AlertsConfig",
    "WebhookSender",
    "load_alerts_config",
    "parse_alerts_config",
]

log = logging.getLogger("shipyard.alerts")

Values = Mapping[tuple[str, str], Mapping[str, float | None]]


class AlertRule(BaseModel):
    """One rule: ``metric`` (in ``window``) compared with ``threshold`` for ``for_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    metric: str = Field(pattern=r"^[a-z_]+\.[A-Za-z0-9_\[\]]+$")
    window: str | None = None
    op: Literal["<", ">"]
    threshold: float
    for_s: float = Field(0.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = {}

    @property
    def key(self) -> str:
        """The provider key this rule reads."""
        return self.metric if self.window is None else f"{self.metric}@{self.window}"

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` breaches the rule (None never does)."""
        if value is None or value != value:  # NaN
            return False
        return value < self.threshold if self.op == "<" else value > self.threshold


class AlertsConfig(BaseModel):
    """The alerts file."""

    model_config = ConfigDict(extra="forbid")

    rules: list[AlertRule] = []
    webhooks: list[str] = []
    interval_s: float = Field(15.0, gt=0)
    repeat_interval_s: float = Field(3600.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(5.0, gt=0)
    queue_size: int = Field(1000, ge=1)


def parse_alerts_config(data: Mapping[str, Any], source: str = "alerts config") -> AlertsConfig:
    """Validate a mapping; a bad rule raises a ConfigError naming the rule and the field.

    Raises:
        ConfigError: a field is missing, unknown or out of range, or two rules share a name.
    """
    try:
        cfg = AlertsConfig.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = data.get("rules") or []
            raw = rules[loc[1]] if loc[1] < len(rules) else {}
            name = raw.get("name", f"#{loc[1] + 1}") if isinstance(raw, Mapping) else loc[1]
            fld = ".".join(str(p) for p in loc[2:]) or "rule"
            where = f"rule {name!r}, field {fld!r}"
        raise ConfigError(
            f"Invalid {source}: {where}: {err['msg']}. Got {err.get('input')!r} instead.",
            hint="Fix that field; see docs/monitoring-alerts.md.",
            details={"loc": [str(p) for p in loc]},
        ) from None
    names = [r.name for r in cfg.rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"Invalid {source}: rule names must be unique. Got {dupes} more than once.",
            hint="Rename one of the rules.",
        )
    return cfg


def load_alerts_config(path: str | Path) -> AlertsConfig:
    """Read and validate a TOML alerts file.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"Alerts file {str(p)!r} does not exist.", hint="Check the path."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Alerts file {str(p)!r} must be TOML. It is not: {exc}.", hint="Fix the syntax."
        ) from None
    return parse_alerts_config(data, source=f"alerts file {str(p)!r}")


class WebhookSender:
    """POSTs events to webhooks from a background thread, with retries and backoff.

    Args:
        urls: Receivers.
        retries, backoff_s, backoff_max_s, timeout_s, queue_size: see :class:`AlertsConfig`.
        on_failure: Called with the url after a delivery fails every try (or is dropped).
    """

    def __init__(
        self,
        urls: list[str],
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.urls = list(urls)
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shipyard-webhooks", daemon=True)
            self._thread.start()

    def submit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every url; never blocks."""
        self.start()
        for url in self.urls:
            try:
                self._queue.put_nowait((url, event))
            except queue.Full:
                self._fail(url, "queue full", event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event has been delivered or given up; True if so."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def close(self) -> None:
        """Stop the thread (pending retries are abandoned and counted as failures)."""
        self._stop.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=self.timeout_s + 1)
            self._thread = None

    def _fail(self, url: str, why: str, event: dict[str, Any]) -> None:
        self.failed += 1
        log.error(
            "alert webhook %s failed (%s); event %s %s lost",
            url,
            why,
            event.get("rule"),
            event.get("status"),
        )
        if self.on_failure is not None:
            self.on_failure(url)

    def _post(self, url: str, body: bytes) -> None:
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            if resp.status >= 300:
                raise urllib.error.HTTPError(url, resp.status, "not 2xx", resp.headers, None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                url, event = item
                event = {**event, "sent_at": time.time()}
                body = json.dumps(event).encode()
                delay = self.backoff_s
                last = ""
                for attempt in range(self.retries + 1):
                    if self._stop.is_set():
                        last = "sender closed"
                        break
                    try:
                        self._post(url, body)
                        self.delivered += 1
                        break
                    except (OSError, urllib.error.URLError) as exc:
                        last = str(exc)
                        log.warning("alert webhook %s try %d failed: %s", url, attempt + 1, exc)
                        if attempt < self.retries:
                            self._stop.wait(min(delay, self.backoff_max_s))
                            delay *= 2
                else:
                    self._fail(url, last, event)
                    continue
                if last == "sender closed":
                    self._fail(url, last, event)
            finally:
                self._queue.task_done()


@dataclass(slots=True)
class _State:
    state: Literal["inactive", "pending", "firing"] = "inactive"
    since: float = 0.0
    started_wall: float = 0.0
    last_sent: float = 0.0
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AlertEngine:
    """Evaluates rules against a provider of current values and emits events.

    Args:
        config: Rules and delivery settings.
        provider: Returns ``{(model, version): {key: value}}`` on each evaluation.
        clock: Monotonic time for ``for_s`` and repeats (inject a ManualClock in tests).
        sender: Where events go besides the log (default: a :class:`WebhookSender` over
            ``config.webhooks``, or none when there are none).
        metrics: A ``ServerMetrics`` (optional) whose ``alerts_firing`` gauge and
            ``alert_webhook_failures`` counter are kept up to date.
    """

    def __init__(
        self,
        config: AlertsConfig,
        provider: Callable[[], Values],
        *,
        clock: Clock | None = None,
        sender: WebhookSender | None = None,
        metrics: Any = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.clock: Clock = clock or MonotonicClock()
        self.metrics = metrics
        if sender is None and config.webhooks:
            sender = WebhookSender(
                config.webhooks,
                retries=config.retries,
                backoff_s=config.backoff_s,
                backoff_max_s=config.backoff_max_s,
                timeout_s=config.timeout_s,
                queue_size=config.queue_size,
                on_failure=self._count_failure,
            )
        self.sender = sender
        self._states: dict[tuple[str, str, str], _State] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _count_failure(self, url: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_webhook_failures.labels(url).inc()

    def states(self) -> dict[tuple[str, str, str], str]:
        """``(rule, model, version)`` → ``inactive``/``pending``/``firing``."""
        with self._lock:
            return {k: s.state for k, s in self._states.items()}

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate every rule once; returns the events emitted (firing or resolved)."""
        now = self.clock.now()
        values = self.provider()
        events: list[dict[str, Any]] = []
        with self._lock:
            for rule in self.config.rules:
                for (model, version), vals in values.items():
                    value = vals.get(rule.key)
                    key = (rule.name, model, version)
                    st = self._states.setdefault(key, _State())
                    st.value = value
                    if rule.holds(value):
                        if st.state == "inactive":
                            st.state, st.since, st.started_wall = "pending", now, time.time()
                        if st.state == "pending" and now - st.since >= rule.for_s:
                            st.state = "firing"
                            st.last_sent = now
                            events.append(self._event("firing", rule, model, version, st))
                        elif (
                            st.state == "firing"
                            and now - st.last_sent >= self.config.repeat_interval_s
                        ):
                            st.last_sent = now
                            events.append(self._event("firing", rule, model, version, st))
                    else:
                        if st.state == "firing":
                            events.append(self._event("resolved", rule, model, version, st))
                        st.state = "inactive"
                    if self.metrics is not None:
                        self.metrics.alerts_firing.labels(
                            rule.name, model, version, rule.severity
                        ).set(1.0 if st.state == "firing" else 0.0)
        for event in events:
            level = logging.WARNING if event["status"] == "firing" else logging.INFO
            log.log(
                level,
                "alert %s %s for %s/%s: %s=%s (%s %s)",
                event["rule"],
                event["status"],
                event["model"],
                event["version"],
                event["metric"],
                event["value"],
                event["op"],
                event["threshold"],
            )
            if self.sender is not None:
                self.sender.submit(event)
        return events

    def _event(
        self, status: str, rule: AlertRule, model: str, version: str, st: _State
    ) -> dict[str, Any]:
        fp = hashlib.sha256(f"{rule.name}\0{model}\0{version}".encode()).hexdigest()[:16]
        return {
            "status": status,
            "rule": rule.name,
            "model": model,
            "version": version,
            "metric": rule.key,
            "value": st.value,
            "op": rule.op,
            "threshold": rule.threshold,
            "severity": rule.severity,
            "labels": dict(rule.labels),
            "fingerprint": fp,
            "starts_at": st.started_wall,
            "ends_at": time.time() if status == "resolved" else None,
        }

    def start(self) -> None:
        """Evaluate every ``config.interval_s`` on a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.evaluate()
                except Exception:  # a broken provider must not kill alerting
                    log.exception("alert evaluation failed")
                self._stop.wait(self.config.interval_s)

        self._thread = threading.Thread(target=loop, name="shipyard-alerts", daemon=True)
        self._thread.start()

    def stop(self, flush_s: float = 0.0) -> None:
        """Stop evaluating, deliver queued events for up to ``flush_s``, close the sender."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.sender is not None:
            if flush_s > 0 and not self.sender.flush(flush_s):
                log.warning("alert webhooks still had events queued when alerting stopped")
            self.sender.close()
