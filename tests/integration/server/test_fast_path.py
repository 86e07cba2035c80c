"""The infer fast path (``server/_http.py``) on a real server, through raw sockets.

The fast path answers ``POST /v2/models/.../infer`` inside the HTTP protocol, without
ASGI. What it must keep of HTTP/1.1 is tested here byte by byte: pipelined requests are
answered in order (behind slower ASGI routes and batched requests alike), ``Connection:
close`` and HTTP/1.0 end the connection, the body limit holds for declared and chunked
bodies, idle keep-alive connections are closed, and requests it leaves to ASGI (escaped
paths, ``Expect: 100-continue``) are still answered.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry

from .conftest import (
    RunningServer,
    register_tiny,
    server_settings,
    start_server,
    stop_server,
    tiny_expected,
)


def _server(home: Path, tmp_path: Path, **server: object) -> RunningServer:
    batching = server.pop("batching", 1)
    settings: Settings = server_settings(
        home, server=server, batching={"max_batch_size": batching, "max_wait_ms": 2}
    )
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny", seed=0)
    register_tiny(reg, tmp_path, "tiny", seed=1)
    reg.close()
    return start_server(["tiny", "tiny:1"], settings)


@pytest.fixture(params=[1, 16], ids=["inline", "batched"])
def fast(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[RunningServer]:
    server = _server(home, tmp_path, batching=request.param)
    yield server
    stop_server(server)


def _connect(server: RunningServer) -> socket.socket:
    host, port = server.http_hostport.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _infer(path: str, x: list[float], *, extra: str = "", http: str = "HTTP/1.1") -> bytes:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]}
    ).encode()
    head = (
        f"POST {path} {http}\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class _Reader:
    """Reads HTTP/1.1 responses (Content-Length framed) off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-response: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            assert self._fill(), "connection closed mid-body"
        body, self.buf = self.buf[:size], self.buf[size:]
        return status, headers, body

    def closed(self, within_s: float = 5.0) -> bool:
        """True once the server has closed the connection (EOF) within the time."""
        self.sock.settimeout(within_s)
        try:
            return not self._fill() and not self.buf
        except TimeoutError:
            return False


def _outputs(body: bytes) -> np.ndarray:
    doc = json.loads(body)
    out = doc["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_pipelined_requests_are_answered_in_order(fast: RunningServer) -> None:
    x1, x2, x3 = [1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 2.0, 8.0], [0.0, 0.0, 1.0, 0.0]
    wire = b"".join(
        [
            _infer("/v2/models/tiny/infer", x1, extra="x-request-id: first\r\n"),
            b"GET /v2/models/tiny HTTP/1.1\r\nHost: t\r\n\r\n",  # an ASGI route between
            _infer("/v2/models/tiny/infer", x2, extra="x-request-id: third\r\n"),
            _infer("/v2/models/tiny/versions/1/infer", x3),
            _infer("/v2/models/nope/infer", x3),
            _infer("/v2/models/tiny/infer", x1, extra="x-request-id: last\r\n"),
        ]
    )
    with _connect(fast) as sock:
        sock.sendall(wire)
        reader = _Reader(sock)
        answers = [reader.response() for _ in range(6)]
    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 200, 200, 404, 200]
    assert answers[0][1]["x-request-id"] == "first"
    assert answers[2][1]["x-request-id"] == "third"
    assert answers[5][1]["x-request-id"] == "last"
    assert json.loads(answers[1][2])["name"] == "tiny"
    np.testing.assert_allclose(
        _outputs(answers[0][2]), tiny_expected(np.array([x1]), seed=1), rtol=1e-5
    )
    np.testing.assert_allclose(
        _outputs(answers[2][2]), tiny_expected(np.array([x2]), seed=1), rtol=1e-5
    )
    np.testing.assert_allclose(
        _outputs(answers[3][2]), tiny_expected(np.array([x3]), seed=0), rtol=1e-5
    )
    assert json.loads(answers[3][2])["model_version"] == "1"
    assert json.loads(answers[4][2])["code"] == "model-not-found"
    np.testing.assert_allclose(
        _outputs(answers[5][2]), tiny_expected(np.array([x1]), seed=1), rtol=1e-5
    )


def test_many_connections_get_their_own_answers(fast: RunningServer) -> None:
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(40, 4)).round(3).astype(np.float32)
    socks = [_connect(fast) for _ in range(8)]
    try:
        for i, x in enumerate(xs):  # 5 pipelined requests on each of 8 connections
            socks[i % 8].sendall(_infer("/v2/models/tiny/infer", x.tolist()))
        got: dict[int, np.ndarray] = {}
        readers = [_Reader(s) for s in socks]
        for i in range(len(xs)):
            status, _, body = readers[i % 8].response()
            assert status == 200
            got[i] = _outputs(body)[0]
    finally:
        for s in socks:
            s.close()
    expected = tiny_expected(xs, seed=1)
    for i in range(len(xs)):
        np.testing.assert_allclose(got[i], expected[i], rtol=1e-5)


@pytest.mark.parametrize(
    ("http", "extra"),
    [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")],
    ids=["connection-close", "http-1.0"],
)
def test_a_last_request_ends_the_connection(fast: RunningServer, http: str, extra: str) -> None:
    with _connect(fast) as sock:
        sock.sendall(_infer("/v2/models/tiny/infer", [1, 2, 3, 4], extra=extra, http=http))
        reader = _Reader(sock)
        status, headers, _ = reader.response()
        assert status == 200
        assert headers["connection"] == "close"
        assert reader.closed()


def test_body_limits_hold_on_the_fast_path(home: Path, tmp_path: Path) -> None:
    server = _server(home, tmp_path, max_body_bytes=2048)
    try:
        # declared too large: refused before the body is sent, the connection ends
        with _connect(server) as sock:
            sock.sendall(
                b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
            )
            reader = _Reader(sock)
            status, headers, body = reader.response()
            assert status == 413
            assert json.loads(body)["code"] == "payload-too-large"
            assert headers["connection"] == "close"
            assert reader.closed()
        # chunked, no length: refused once the limit is passed
        with _connect(server) as sock:
            sock.sendall(
                b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(3):
                sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            reader = _Reader(sock)
            status, _, body = reader.response()
            assert status == 413
            assert json.loads(body)["code"] == "payload-too-large"
            assert reader.closed()
        # a chunked body inside the limit is answered
        with _connect(server) as sock:
            whole = _infer("/v2/models/tiny/infer", [1, 2, 3, 4]).split(b"\r\n\r\n", 1)[1]
            sock.sendall(
                b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (whole[:10], whole[10:]))
                + b"0\r\n\r\n"
            )
            status, _, body = _Reader(sock).response()
            assert status == 200
            np.testing.assert_allclose(
                _outputs(body), tiny_expected(np.array([[1, 2, 3, 4]]), seed=1), rtol=1e-5
            )
    finally:
        stop_server(server)


def test_idle_keep_alive_connections_are_closed(home: Path, tmp_path: Path) -> None:
    server = _server(home, tmp_path, keep_alive_s=0.3, client_timeout_s=1.0)
    try:
        with _connect(server) as sock:
            sock.sendall(_infer("/v2/models/tiny/infer", [1, 2, 3, 4]))
            reader = _Reader(sock)
            assert reader.response()[0] == 200
            time.sleep(0.1)  # still open well inside the timeout: a second request works
            sock.sendall(_infer("/v2/models/tiny/infer", [1, 2, 3, 4]))
            assert reader.response()[0] == 200
            started = time.monotonic()
            assert reader.closed(within_s=5.0)
            assert time.monotonic() - started < 2.0
    finally:
        stop_server(server)


def test_requests_left_to_asgi_are_answered(fast: RunningServer) -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    expected = tiny_expected(np.array([x]), seed=1)
    with _connect(fast) as sock:
        reader = _Reader(sock)
        # an escaped path: ASGI decodes it to /v2/models/tiny/infer
        sock.sendall(_infer("/v2/models/tin%79/infer", x))
        status, _, body = reader.response()
        assert status == 200
        np.testing.assert_allclose(_outputs(body), expected, rtol=1e-5)
        # Expect: 100-continue: the body is sent after the interim answer
        wire = _infer("/v2/models/tiny/infer", x, extra="Expect: 100-continue\r\n")
        head, body_bytes = wire.split(b"\r\n\r\n", 1)
        sock.sendall(head + b"\r\n\r\n")
        interim, _, _ = reader.response()
        assert interim == 100
        sock.sendall(body_bytes)
        status, _, body = reader.response()
        assert status == 200
        np.testing.assert_allclose(_outputs(body), expected, rtol=1e-5)
        # and the connection still serves the fast path afterwards
        sock.sendall(_infer("/v2/models/tiny/infer", x))
        assert reader.response()[0] == 200


def test_stopping_finishes_batched_requests_in_flight(home: Path, tmp_path: Path) -> None:
    import threading

    import httpx

    from shipyard.runtime import FakeRuntime

    settings = server_settings(home, batching={"max_batch_size": 8})
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "slow")
    reg.close()
    server = start_server(["slow"], settings, runtime_factory=lambda rs: FakeRuntime(400))
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=20) as c:
            statuses.append(c.post(f"{server.http}/v2/models/slow/infer", json=body).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # the requests are in their batch (the runtime takes 0.4 s)
    started = time.monotonic()
    stop_server(server)  # sets the stop event and waits for the server to finish
    for t in threads:
        t.join(20)
    assert statuses == [200, 200, 200, 200]
    assert time.monotonic() - started < 15
