"""Every Prometheus metric shipyard exports, defined once, in a per-app CollectorRegistry.

Per-request code never calls ``.labels(...)`` (a dict lookup plus a lock per call): the
dataplane asks :meth:`ServerMetrics.for_model` once per model version and keeps the
returned :class:`ModelMetrics` of bound children.

Imports: config (and prometheus_client).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ModelMetrics", "ServerMetrics"]

LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class ModelMetrics:
    """Bound metric children for one (model, version, protocol)."""

    requests: Counter
    latency: Histogram
    batch_size: Histogram
    queue_depth: Gauge


class ServerMetrics:
    """The server's metrics; one instance per app so tests and embedders never collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "shipyard_requests",
            "Inference requests answered.",
            ["model", "version", "protocol"],
            registry=r,
        )
        self.errors = Counter(
            "shipyard_errors",
            "Requests that failed, by error code.",
            ["model", "version", "protocol", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "shipyard_request_latency_seconds",
            "Time from request parsed to response encoded.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "shipyard_batch_size",
            "Requests merged into one runtime call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "shipyard_queue_depth",
            "Requests waiting in a model's batcher.",
            ["model", "version"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "shipyard_model_load_seconds",
            "Time to load and warm a model version.",
            ["model", "version"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.loaded = Gauge(
            "shipyard_model_loaded",
            "1 while a model version is loaded and ready.",
            ["model", "version"],
            registry=r,
        )
        self.integrity_failures = Counter(
            "shipyard_artifact_integrity_failures",
            "Loads refused because a sha256 did not match.",
            ["model", "version"],
            registry=r,
        )
        self._children: dict[tuple[str, str, str], ModelMetrics] = {}

    def for_model(self, model: str, version: str, protocol: str) -> ModelMetrics:
        """Bound children for one model version and protocol (cached)."""
        key = (model, version, protocol)
        found = self._children.get(key)
        if found is None:
            found = ModelMetrics(
                requests=self.requests.labels(model, version, protocol),
                latency=self.latency.labels(model, version, protocol),
                batch_size=self.batch_size.labels(model, version),
                queue_depth=self.queue_depth.labels(model, version),
            )
            self._children[key] = found
        return found

    def error(self, model: str, version: str, protocol: str, code: str) -> None:
        """Count one failed request."""
        self.errors.labels(model, version, protocol, code).inc()

    def exposition(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
