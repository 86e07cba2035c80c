"""Token auth on a real server on 127.0.0.1 (REST public and management listeners)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipyard.config import load_settings
from shipyard.registry import ModelRegistry
from shipyard.security import TokenStore
from shipyard.server._auth import auth_enabled
from tests.integration.server.conftest import (
    RunningServer,
    register_tiny,
    server_settings,
    start_server,
    stop_server,
)

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture
def secured(home: Path, tmp_path: Path) -> Iterator[tuple[RunningServer, TokenStore]]:
    settings = server_settings(home, security={"auth": "on", "fail_burst": 5})
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny")
    reg.close()
    store = TokenStore(home / "security.db")
    server = start_server(["tiny"], settings)
    yield server, store
    stop_server(server)
    store.close()


def test_rest_auth_statuses(
    secured: tuple[RunningServer, TokenStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, store = secured
    infer, _ = store.create("svc", ["infer"])
    reader, _ = store.create("dash", ["read"])
    admin, _ = store.create("ops", ["admin"])
    url = f"{server.http}/v2/models/tiny/infer"
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{server.http}/v2/health/ready").status_code == 200  # probes stay open
        none = c.post(url, json=BODY)
        bad = c.post(url, json=BODY, headers={"Authorization": f"Bearer {infer}x"})
        assert none.status_code == bad.status_code == 401
        assert none.json()["code"] == bad.json()["code"] == "unauthenticated"
        assert none.json()["error"] == bad.json()["error"]
        assert none.headers["www-authenticate"].startswith("Bearer")
        wrong = c.post(url, json=BODY, headers={"Authorization": f"Bearer {reader}"})
        assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
        ok = c.post(url, json=BODY, headers={"Authorization": f"Bearer {infer}"})
        assert ok.status_code == 200, ok.text
        meta = c.get(f"{server.http}/v2/models/tiny", headers={"Authorization": f"Bearer {reader}"})
        assert meta.status_code == 200
        assert c.get(f"{server.http}/v2/models/tiny").status_code == 401
        mgmt = f"{server.management}/v2/repository/index"
        assert c.post(mgmt, headers={"Authorization": f"Bearer {infer}"}).status_code == 403
        assert c.post(mgmt, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        # repeated failures from one client → 429 with Retry-After, server still healthy
        statuses = [
            c.post(url, json=BODY, headers={"Authorization": "Bearer no"}).status_code
            for _ in range(6)
        ]
        assert statuses[-1] == 429
        limited = c.post(url, json=BODY, headers={"Authorization": f"Bearer {infer}"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["code"] == "rate-limited"
        assert c.get(f"{server.http}/v2/health/live").status_code == 200
    for raw in (infer, reader, admin):
        assert raw.split("_")[2] not in caplog.text


def test_auth_auto_turns_on_for_public_bind_and_warns_when_off(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert auth_enabled(load_settings({"home": str(home), "server": {"host": "0.0.0.0"}}))
    assert not auth_enabled(load_settings({"home": str(home)}))
    with caplog.at_level(logging.WARNING):
        off = load_settings(
            {"home": str(home), "server": {"host": "0.0.0.0"}, "security": {"auth": "off"}}
        )
        assert not auth_enabled(off)
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_default_ports_avoid_other_servers(home: Path) -> None:
    s = load_settings({"home": str(home)}).server
    taken = {8000, 8001, 8002, 8500, 8501, 8080, 8081, 8082, 3000}
    assert {s.port, s.grpc_port, s.management_port}.isdisjoint(taken)
    assert s.management_host == "127.0.0.1"


def test_grpc_auth_statuses(secured: tuple[RunningServer, TokenStore]) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, store = secured
    infer, _ = store.create("svc", ["infer"])
    reader, _ = store.create("dash", ["read"])
    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live()  # open probe
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))

    def status(headers: dict[str, str] | None) -> str:
        try:
            client.infer("tiny", [x], headers=headers)
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    assert status(None) == "StatusCode.UNAUTHENTICATED"
    assert status({"authorization": f"Bearer {infer}x"}) == "StatusCode.UNAUTHENTICATED"
    assert status({"authorization": f"Bearer {reader}"}) == "StatusCode.PERMISSION_DENIED"
    assert status({"authorization": f"Bearer {infer}"}) == "OK"
    meta = client.get_model_metadata("tiny", headers={"authorization": f"Bearer {reader}"})
    assert meta.name == "tiny"
    client.close()


def test_revoked_token_refused_within_one_second(
    secured: tuple[RunningServer, TokenStore],
) -> None:
    import time

    server, store = secured
    raw, info = store.create("svc", ["read"])
    url = f"{server.http}/v2/models/tiny"
    headers = {"Authorization": f"Bearer {raw}"}
    with httpx.Client(timeout=10) as c:
        assert c.get(url, headers=headers).status_code == 200
        store.revoke(info.token_id)
        time.sleep(1.05)
        assert c.get(url, headers=headers).status_code == 401
