"""Live quality and alerts in a running server: the tracker, its /metrics source, alerting.

Nothing here runs on the inference path: the tracker is fed by the feedback route (in a
worker thread), read by ``/metrics`` scrapes (off the event loop) and by the alert
engine's own thread.

Imports: config, errors, monitoring, server.dataplane.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shipyard.errors import ConfigError, InvalidInputError
from shipyard.monitoring.alerts import AlertEngine, AlertsConfig, load_alerts_config
from shipyard.monitoring.live import LiveQualityTracker
from shipyard.monitoring.metrics import LATENCY_BUCKETS_S, ServerMetrics, histogram_quantile

if TYPE_CHECKING:
    from shipyard.config import Settings
    from shipyard.server.dataplane import DataPlane

__all__ = [
    "SERVER_KEY",
    "AlertValues",
    "live_quality_tracker",
    "load_alerts",
    "start_alerts",
]

logger = logging.getLogger(__name__)

SERVER_KEY = ("*", "*")
"""The (model, version) under which server-wide values (``log.dropped_total``) are given."""


def live_quality_tracker(settings: Settings) -> LiveQualityTracker | None:
    """The tracker of ``monitoring.quality_windows`` (None when the prediction log is off).

    The server attaches it to its dataplane (fed by feedback, seeded at each load) and
    to its metrics (``shipyard_live_quality*``).

    Raises:
        ConfigError: ``monitoring.quality_windows`` or ``quality_capacity`` is invalid.
    """
    mon = settings.monitoring
    if not mon.log_predictions:
        return None
    try:
        return LiveQualityTracker(mon.quality_windows, mon.quality_capacity)
    except InvalidInputError as exc:
        raise ConfigError(
            f"monitoring.quality_windows and quality_capacity must be valid. {exc.message}",
            hint='Set SHIPYARD_MONITORING__QUALITY_WINDOWS, e.g. \'["5m", "last_1000"]\'.',
        ) from None


class AlertValues:
    """What alert rules read, per (model, version), on each evaluation.

    ``quality.<metric>@<window>`` from the live-quality tracker; ``latency.p99_ms``, the
    99th percentile of request latency over the interval since the previous evaluation
    (None when no request was answered in it), from the latency histogram's buckets;
    and, under :data:`SERVER_KEY`, ``log.dropped_total``: prediction-log records dropped
    since the server started.
    """

    def __init__(
        self, dataplane: DataPlane, metrics: ServerMetrics, tracker: LiveQualityTracker | None
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.tracker = tracker
        self._latency: dict[tuple[str, str], list[int]] = {}

    def __call__(self) -> dict[tuple[str, str], dict[str, float | None]]:
        out: dict[tuple[str, str], dict[str, float | None]] = {}
        if self.tracker is not None:
            out = {key: dict(values) for key, values in self.tracker.values().items()}
        counts = self.metrics.latency_counts()
        for key, now in counts.items():
            before = self._latency.get(key, [0] * len(now))
            p99 = histogram_quantile(
                0.99, LATENCY_BUCKETS_S, [a - b for a, b in zip(now, before, strict=True)]
            )
            out.setdefault(key, {})["latency.p99_ms"] = None if p99 is None else p99 * 1000
        self._latency = counts
        log = self.dataplane.predlog
        out[SERVER_KEY] = {"log.dropped_total": None if log is None else float(log.dropped)}
        return out


def load_alerts(settings: Settings) -> AlertsConfig | None:
    """The alerts file of ``monitoring.alerts_file`` (None when unset), checked at startup.

    ``monitoring.alerts_interval_s``, when set, replaces the file's ``interval_s``.

    Raises:
        ConfigError: the file is missing, not TOML, or has an invalid rule.
    """
    mon = settings.monitoring
    if mon.alerts_file is None:
        return None
    config = load_alerts_config(mon.alerts_file)
    if mon.alerts_interval_s is not None:
        config = config.model_copy(update={"interval_s": mon.alerts_interval_s})
    return config


def start_alerts(
    config: AlertsConfig,
    dataplane: DataPlane,
    metrics: ServerMetrics,
    tracker: LiveQualityTracker | None,
) -> AlertEngine:
    """Start evaluating ``config``'s rules on a background thread; stop it on shutdown."""
    engine = AlertEngine(config, AlertValues(dataplane, metrics, tracker), metrics=metrics)
    engine.start()
    logger.info(
        "Alerts: %d rules evaluated every %.3g s, %d webhooks",
        len(config.rules),
        config.interval_s,
        len(config.webhooks),
    )
    return engine
