"""One hardened server on 127.0.0.1 that the whole attack suite shares, and its tokens.

Auth is on; the limits are small so that attacks past them are cheap to send:
64 KiB bodies, 8 KiB heads, 1 KiB BYTES elements, NaN refused, 1 s for a client to send its
headers (or to resume a stalled body). The failure rate limit is set out of reach so that
hundreds of refused tokens do not lock the suite's own client out (it is tested apart,
on a server of its own, in ``tests/integration/server/test_auth.py``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.registry import ModelRegistry
from shipyard.security import TokenStore
from tests.integration.server.conftest import (
    RunningServer,
    register_tiny,
    server_settings,
    start_server,
    stop_server,
    tiny_expected,
)

MAX_BODY = 64 * 1024
MAX_HEADER = 8 * 1024
MAX_ELEMENT = 1024
CLIENT_TIMEOUT_S = 1.0

X = [[1.0, 2.0, 3.0, 4.0]]
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[0]}]}


@dataclass
class Fort:
    """The shared server and a token per role."""

    server: RunningServer
    store: TokenStore
    infer: str
    read: str
    feedback: str
    admin: str
    expired: str
    revoked: str

    @property
    def http(self) -> str:
        return self.server.http

    @property
    def management(self) -> str:
        return self.server.management

    @property
    def port(self) -> int:
        return self.server.settings.server.port

    @property
    def management_port(self) -> int:
        return self.server.settings.server.management_port

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def fort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fort]:
    tmp = tmp_path_factory.mktemp("fort")
    home = tmp / "home"
    settings = server_settings(
        home,
        security={"auth": "on", "fail_burst": 1_000_000, "fail_refill_per_s": 1000},
        server={
            "max_body_bytes": MAX_BODY,
            "max_header_bytes": MAX_HEADER,
            "max_bytes_element_bytes": MAX_ELEMENT,
            "allow_nan": False,
            "client_timeout_s": CLIENT_TIMEOUT_S,
            "registry_poll_s": 0,
        },
    )
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp, "tiny", seed=0)
    reg.close()
    store = TokenStore(home / "security.db")
    tokens = {
        role: store.create(role, [scope])[0]
        for role, scope in [("svc", "infer"), ("dash", "read"), ("labeler", "feedback")]
    }
    admin, _ = store.create("ops", ["admin"])
    expired, _ = store.create("old", ["admin"], expires_in_s=0.01)
    revoked, info = store.create("gone", ["admin"])
    store.revoke(info.token_id)
    time.sleep(0.02)  # the expired token is past its expiry
    server = start_server(["tiny"], settings)
    yield Fort(
        server,
        store,
        infer=tokens["svc"],
        read=tokens["dash"],
        feedback=tokens["labeler"],
        admin=admin,
        expired=expired,
        revoked=revoked,
    )
    stop_server(server)
    store.close()


def assert_healthy(fort: Fort) -> None:
    """The server is ready and answers a normal inference request correctly."""
    with httpx.Client(timeout=10) as c:
        ready = c.get(f"{fort.http}/v2/health/ready")
        assert ready.status_code == 200, ready.text
        r = c.post(f"{fort.http}/v2/models/tiny/infer", json=BODY, headers=fort.bearer(fort.infer))
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    np.testing.assert_allclose(
        np.asarray(out["data"], dtype=np.float32).reshape(1, 2),
        tiny_expected(np.asarray(X, dtype=np.float32)),
        rtol=1e-5,
    )


def raw_http(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes.

    Raises:
        TimeoutError: the server neither answered nor closed within ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            length = _content_length(head)
            if sep and length is not None and len(body) >= length:
                return out


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def parse_response(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, lower-cased headers and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def request_bytes(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """A raw HTTP/1.1 request with ``Connection: close`` (no header is added or checked)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def home_of(fort: Fort) -> Path:
    return fort.server.settings.home
