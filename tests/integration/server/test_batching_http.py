"""Batching, overload, deadlines and poisoned requests through the real app (in-process ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shipyard.config import Settings, with_overrides
from shipyard.errors import InferenceError
from shipyard.registry import ModelRegistry
from shipyard.runtime import FakeRuntime, OnnxRuntime
from shipyard.runtime.pool import ModelPool
from shipyard.server.app import create_app
from shipyard.server.dataplane import DataPlane

from .conftest import register_tiny, tiny_expected


class PoisonRuntime(FakeRuntime):
    """Fails any batch that contains the value 666 (a request that breaks the engine)."""

    def predict(self, inputs: Any, outputs: Any = None) -> dict[str, np.ndarray]:
        if any((np.asarray(v) == 666).any() for v in inputs.values()):
            raise InferenceError("poisoned input")
        return super().predict(inputs, outputs)


def body(rows: list[list[float]]) -> dict[str, Any]:
    flat = [v for r in rows for v in r]
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}]}


async def _with_app(
    settings: Settings,
    tmp_path: Path,
    overrides: dict[str, Any],
    test: Callable[[httpx.AsyncClient, DataPlane], Any],
    factory: Callable[[Any], Any] | None = None,
) -> None:
    s = with_overrides(settings, overrides)
    reg = ModelRegistry.open(s)
    register_tiny(reg, tmp_path, "tiny")
    pool = ModelPool(reg, s.runtime, runtime_factory=factory or (lambda rs: OnnxRuntime(rs)))
    dp = DataPlane(pool, s)
    await dp.start(["tiny"])
    transport = httpx.ASGITransport(app=create_app(dp, s))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await test(client, dp)
    finally:
        await dp.aclose()
        reg.close()


def test_thousand_concurrent_distinct_requests_get_their_own_answers(
    settings: Settings, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(1000)]

    async def test(client: httpx.AsyncClient, dp: DataPlane) -> None:
        responses = await asyncio.gather(
            *(client.post("/v2/models/tiny/infer", json=body(x.tolist())) for x in xs)
        )
        for x, r in zip(xs, responses, strict=True):
            assert r.status_code == 200, r.text
            out = r.json()["outputs"][0]
            got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            np.testing.assert_allclose(got, tiny_expected(x), rtol=1e-4, atol=1e-5)
        served = dp.lookup("tiny")
        assert served.batcher is not None
        assert served.batcher.batches_run < 1000, "requests were never batched"

    asyncio.run(
        _with_app(
            settings, tmp_path, {"batching": {"max_batch_size": 32, "max_queue_size": 2000}}, test
        )
    )


def test_poisoned_request_fails_alone_in_its_batch(settings: Settings, tmp_path: Path) -> None:
    async def test(client: httpx.AsyncClient, dp: DataPlane) -> None:
        rows = [[float(i), 1, 2, 3] for i in range(20)]
        rows[7] = [666, 1, 2, 3]
        responses = await asyncio.gather(
            *(client.post("/v2/models/tiny/infer", json=body([r])) for r in rows)
        )
        statuses = [r.status_code for r in responses]
        assert statuses[7] == 500
        assert responses[7].json()["code"] == "inference-error"
        assert statuses[:7] + statuses[8:] == [200] * 19

    asyncio.run(
        _with_app(
            settings,
            tmp_path,
            {"batching": {"max_batch_size": 32}},
            test,
            factory=lambda rs: PoisonRuntime(),
        )
    )


async def _asgi_post(
    app: Any, path: str, payload: dict[str, Any]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight into the ASGI app, as a server's protocol layer would send it."""
    import json

    data = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "client": ("127.0.0.1", 1),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_full_queue_answers_503_with_retry_after(settings: Settings, tmp_path: Path) -> None:
    import json

    s = with_overrides(settings, {"batching": {"max_batch_size": 2, "max_queue_size": 2}})

    async def main() -> None:
        reg = ModelRegistry.open(s)
        register_tiny(reg, tmp_path, "tiny")
        pool = ModelPool(reg, s.runtime, runtime_factory=lambda rs: FakeRuntime(latency_ms=5))
        dp = DataPlane(pool, s)
        await dp.start(["tiny"])
        app = create_app(dp, s)
        try:
            # ten requests parsed in one loop turn, as after a burst on the sockets
            results = await asyncio.gather(
                *(_asgi_post(app, "/v2/models/tiny/infer", body([[1, 2, 3, 4]])) for _ in range(10))
            )
        finally:
            await dp.aclose()
            reg.close()
        refused = [r for r in results if r[0] == 503]
        assert len(refused) == 8, [r[0] for r in results]
        assert all(headers[b"retry-after"] for _, headers, _ in refused)
        assert all(json.loads(b)["code"] == "overloaded" for _, _, b in refused)
        assert sum(1 for r in results if r[0] == 200) == 2

    asyncio.run(main())


def test_expired_deadline_answers_504_and_never_runs(settings: Settings, tmp_path: Path) -> None:
    runtimes: list[FakeRuntime] = []

    def factory(rs: Any) -> FakeRuntime:
        rt = FakeRuntime()
        runtimes.append(rt)
        return rt

    async def test(client: httpx.AsyncClient, dp: DataPlane) -> None:
        calls_before = runtimes[-1].calls
        for _ in range(3):
            r = await client.post(
                "/v2/models/tiny/infer",
                json=body([[1, 2, 3, 4]]),
                headers={"x-request-timeout-ms": "0.0001"},
            )
            assert r.status_code == 504, r.text
            assert r.json()["code"] == "deadline-exceeded"
        assert runtimes[-1].calls == calls_before  # never executed
        ok = await client.post(
            "/v2/models/tiny/infer",
            json=body([[1, 2, 3, 4]]),
            headers={"x-request-timeout-ms": "5000"},
        )
        assert ok.status_code == 200

    for batch in (1, 8):  # inline path and batcher path
        (tmp_path / str(batch)).mkdir()
        asyncio.run(
            _with_app(
                settings,
                tmp_path / str(batch),
                {"batching": {"max_batch_size": batch}},
                test,
                factory=factory,
            )
        )
