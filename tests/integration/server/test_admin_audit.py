"""Admin calls on the management app land in the registry's audit log (real ORT, SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.runtime.pool import ModelPool
from shipyard.server.app import create_management_app
from shipyard.server.dataplane import DataPlane
from tests.integration.server.conftest import RunningServer, register_tiny


def test_admin_load_and_unload_are_audited_with_the_client_address(
    settings: Settings, tmp_path: Path
) -> None:
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny")
    dp = DataPlane(ModelPool(reg, settings.runtime), settings)
    app = create_management_app(dp, settings)

    async def go() -> None:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 40123))
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            assert (await client.post("/v2/repository/models/tiny/load")).status_code == 200
            assert (await client.post("/v2/repository/models/tiny/unload")).status_code == 200
            missing = await client.post("/v2/repository/models/nope/load")
            assert missing.status_code == 404
        await dp.aclose()

    try:
        asyncio.run(go())
        rows = [
            (e.action, e.target, e.source, e.details)
            for e in reg.audit_log()
            if e.action.startswith("server.")
        ]
        assert rows == [
            ("server.load", "tiny", "198.51.100.4:40123", {"ok": True}),
            ("server.unload", "tiny", "198.51.100.4:40123", {"ok": True}),
            ("server.load", "nope", "198.51.100.4:40123", {"ok": False, "code": "model-not-found"}),
        ]
    finally:
        reg.close()


def test_grpc_admin_load_and_unload_are_audited(served: RunningServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(served.grpc)
    try:
        client.unload_model("tiny:1")
        client.load_model("tiny:1")
        with pytest.raises(InferenceServerException):
            client.load_model("nope")
    finally:
        client.close()
    with ModelRegistry.open(served.settings) as reg:
        rows = [e for e in reg.audit_log() if e.action.startswith("server.")]
    got = [(e.action, e.target, e.details) for e in rows[-3:]]
    assert got == [
        ("server.unload", "tiny:1", {"ok": True}),
        ("server.load", "tiny:1", {"ok": True}),
        ("server.load", "nope", {"ok": False, "code": "model-not-found"}),
    ]
    assert all(e.source.startswith("grpc:ipv") for e in rows[-3:]), rows[-1].source
