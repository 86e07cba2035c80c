"""The request-path metric families expose exactly what prometheus_client's own would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shipyard.monitoring.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S, ServerMetrics


def _samples(text: bytes, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@settings(max_examples=50, deadline=None)
@given(
    latencies=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=40),
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=20),
)
def test_hot_families_match_prometheus_client(latencies: list[float], sizes: list[int]) -> None:
    ours = ServerMetrics()
    bound = ours.for_model("m", "3", "rest")
    ref = CollectorRegistry()
    requests = Counter("shipyard_requests", "x", ["model", "version", "protocol"], registry=ref)
    latency = Histogram(
        "shipyard_request_latency_seconds",
        "x",
        ["model", "version", "protocol"],
        buckets=LATENCY_BUCKETS_S,
        registry=ref,
    )
    batch = Histogram(
        "shipyard_batch_size", "x", ["model", "version"], buckets=BATCH_BUCKETS, registry=ref
    )
    # for_model creates its children up front, as .labels() does for prometheus_client
    requests.labels("m", "3", "rest")
    latency.labels("m", "3", "rest")
    batch.labels("m", "3")
    for v in latencies:
        bound.requests.inc()
        bound.latency.observe(v)
        requests.labels("m", "3", "rest").inc()
        latency.labels("m", "3", "rest").observe(v)
    for n in sizes:
        bound.batch_size.observe(n)
        batch.labels("m", "3").observe(n)
    got, want = ours.exposition(), generate_latest(ref)
    for prefix in ("shipyard_requests", "shipyard_request_latency", "shipyard_batch_size"):
        g, w = _samples(got, prefix), _samples(want, prefix)
        assert g.keys() == w.keys()
        for key, value in w.items():
            assert abs(g[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_each_model_version_and_protocol_has_its_own_children() -> None:
    m = ServerMetrics()
    m.for_model("a", "1", "rest").requests.inc()
    m.for_model("a", "1", "grpc").requests.inc(2)
    m.for_model("a", "2", "rest").latency.observe(0.001)
    text = m.exposition().decode()
    assert 'shipyard_requests_total{model="a",protocol="rest",version="1"} 1.0' in text
    assert 'shipyard_requests_total{model="a",protocol="grpc",version="1"} 2.0' in text
    assert (
        'shipyard_request_latency_seconds_count{model="a",protocol="rest",version="2"} 1.0' in text
    )
    assert m.for_model("a", "1", "rest") is m.for_model("a", "1", "rest")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    import pytest

    from shipyard.monitoring.metrics import histogram_quantile

    bounds = (1.0, 2.0, 4.0)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 0]) is None
    assert histogram_quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(1.5)
    assert histogram_quantile(0.99, bounds, [50, 49, 1, 0]) == pytest.approx(2.0)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 3]) == 4.0  # +Inf: the largest bound
