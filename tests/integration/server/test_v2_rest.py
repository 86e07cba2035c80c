"""Open Inference Protocol V2 over REST against a real server, with httpx and tritonclient."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from .conftest import RunningServer, tiny_expected


def test_health_and_server_metadata(served: RunningServer) -> None:
    with httpx.Client(base_url=served.http) as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        meta = c.get("/v2").json()
        assert meta["name"] == "shipyard"
        assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_reports_signature_and_versions(served: RunningServer) -> None:
    with httpx.Client(base_url=served.http) as c:
        meta = c.get("/v2/models/tiny").json()
        assert meta["platform"] == "onnx_onnxv1"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert sorted(meta["versions"]) == ["1", "2"]
        assert c.get("/v2/models/tiny/versions/1/ready").status_code == 200
        assert c.get("/v2/models/tiny/ready").status_code == 200


def test_infer_json_routes_default_alias_and_explicit_version(served: RunningServer) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}],
    }
    with httpx.Client(base_url=served.http) as c:
        r = c.post("/v2/models/tiny/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == "r1"
        assert out["model_version"] == "2"
        y = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(
            out["outputs"][0]["shape"]
        )
        np.testing.assert_allclose(y, tiny_expected(x, seed=1), rtol=1e-5)
        r = c.post("/v2/models/tiny/versions/1/infer", json=body)
        assert r.json()["model_version"] == "1"
        y1 = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 2)
        np.testing.assert_allclose(y1, tiny_expected(x, seed=0), rtol=1e-5)
        assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v2/models/ghost/infer", {"inputs": []}, 404, "model-not-found"),
        ("/v2/models/tiny/versions/9/infer", {"inputs": []}, 404, "version-not-found"),
        (
            "/v2/models/tiny/infer",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}
                ]
            },
            400,
            "signature-mismatch",
        ),
        (
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            None,
        ),
        (
            "/v2/models/tiny/infer",
            {
                "inputs": [
                    {"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                ]
            },
            400,
            "signature-mismatch",
        ),
    ],
)
def test_infer_errors_have_status_code_and_body(
    served: RunningServer, path: str, body: dict, status: int, code: str | None
) -> None:
    with httpx.Client(base_url=served.http) as c:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["error"]
    assert payload["request_id"]
    if code:
        assert payload["code"] == code
    assert "Traceback" not in r.text


def test_malformed_json_is_400_and_server_stays_healthy(served: RunningServer) -> None:
    with httpx.Client(base_url=served.http) as c:
        r = c.post(
            "/v2/models/tiny/infer",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"]
        assert c.get("/v2/health/live").status_code == 200


def test_body_over_limit_is_413_before_reading(served: RunningServer) -> None:
    import json
    import socket

    limit = served.settings.server.max_body_bytes
    host, port = served.http_hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # declare a body over the limit but send none of it: the answer must not wait for it
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + f"Content-Length: {limit + 1}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["code"] == "payload-too-large"


def _raw_exchange(hostport: str, chunks: list[bytes]) -> tuple[bytes, bytes]:
    """Send raw bytes in ``chunks``; return the response head and body (or what came)."""
    import socket

    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: that is the point
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length: " in head.lower():
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("where", ["one-header", "many-headers", "url", "split-reads"])
def test_headers_over_limit_are_431_before_buffering(served: RunningServer, where: str) -> None:
    import json

    limit = served.settings.server.max_header_bytes
    line = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
    if where == "one-header":
        chunks = [line + b"X-Big: " + b"a" * (limit + 10) + b"\r\n\r\n"]
    elif where == "many-headers":
        chunks = [line + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(limit // 100))]
        chunks[0] += b"\r\n"
    elif where == "url":
        chunks = [b"GET /v2/health/live?q=" + b"c" * (limit + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    else:  # an endless header sent in small pieces, never finished
        chunks = [line + b"X-Slow: "] + [b"d" * 1000] * (limit // 1000 + 5)
    head, body = _raw_exchange(served.http_hostport, chunks)
    assert head.startswith(b"HTTP/1.1 431"), head[:80]
    assert json.loads(body)["code"] == "headers-too-large"
    # the server stays healthy, and a head just under the limit still passes
    ok_head, _ = _raw_exchange(
        served.http_hostport,
        [line + b"X-Fits: " + b"e" * (limit - len(line) - 200) + b"\r\nConnection: close\r\n\r\n"],
    )
    assert ok_head.startswith(b"HTTP/1.1 200"), ok_head[:80]


def test_pipelined_requests_each_get_their_own_header_budget(served: RunningServer) -> None:
    limit = served.settings.server.max_header_bytes
    one = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"f" * (limit // 2) + b"\r\n\r\n"
    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    import socket

    host, port = served.http_hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(one + one + one + last)  # together well over the limit, each under it
        data = b""
        while got := sock.recv(65536):
            data += got
    assert data.count(b"HTTP/1.1 200") == 4, data[:200]


def test_unknown_route_is_json_404(served: RunningServer) -> None:
    with httpx.Client(base_url=served.http) as c:
        r = c.get("/v3/whatever")
    assert r.status_code == 404
    assert r.json()["error"]


def test_metrics_count_requests(served: RunningServer) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with httpx.Client(base_url=served.http) as c:
        for _ in range(3):
            assert c.post("/v2/models/tiny/infer", json=body).status_code == 200
        text = c.get("/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("shipyard_requests_total{")
        and 'model="tiny"' in ln
        and 'version="2"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3
    assert "shipyard_request_latency_seconds_bucket" in text


def test_tritonclient_http_json_and_binary(served: RunningServer) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served.http_hostport)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("tiny")
        meta = client.get_model_metadata("tiny")
        assert meta["inputs"][0]["name"] == "x"
        x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        for binary in (False, True):
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("y", binary_data=binary)
            res = client.infer("tiny", [inp], outputs=[out], model_version="1")
            np.testing.assert_allclose(res.as_numpy("y"), tiny_expected(x, seed=0), rtol=1e-5)
    finally:
        client.close()


def test_tritonclient_http_repository_on_management_port(served: RunningServer) -> None:
    import tritonclient.http as httpclient

    mgmt = httpclient.InferenceServerClient(served.management_hostport)
    public = httpclient.InferenceServerClient(served.http_hostport)
    try:
        index = mgmt.get_model_repository_index()
        assert {row["name"] for row in index} == {"tiny"}
        mgmt.unload_model("tiny:1")
        assert not public.is_model_ready("tiny", model_version="1")
        assert public.is_server_ready()  # an operator's unload leaves the server ready
        failed = httpx.post(f"{served.management}/v2/repository/models/absent/load")
        assert failed.status_code == 404  # a failed management load is the model's, not ours
        assert public.is_server_ready()
        mgmt.load_model("tiny:1")
        assert public.is_model_ready("tiny", model_version="1")
    finally:
        mgmt.close()
        public.close()


def test_repository_routes_are_not_on_the_public_port(served: RunningServer) -> None:
    with httpx.Client(base_url=served.http) as c:
        assert c.post("/v2/repository/index", json={}).status_code == 404


def test_access_log_carries_request_id_and_w3c_trace_id(served: RunningServer) -> None:
    import logging

    from shipyard.logs import ContextFilter

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    access = logging.getLogger("shipyard.access")
    collect = Collect()
    collect.addFilter(ContextFilter())
    saved = (access.level, access.disabled)
    access.addHandler(collect)
    access.setLevel(logging.INFO)
    access.disabled = False
    try:
        with httpx.Client(base_url=served.http) as c:
            r = c.post(
                "/v2/models/tiny/infer",
                json=body,
                headers={
                    "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                    "x-request-id": "abc123",
                },
            )
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "abc123"
        # The server writes the access line after the response is sent, on its
        # own thread: wait for it rather than racing it.
        deadline = time.monotonic() + 5
        while not collect.records and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        access.removeHandler(collect)
        access.setLevel(saved[0])
        access.disabled = saved[1]
    assert collect.records, "no access log line"
    assert collect.records[-1].request_id == "abc123"  # type: ignore[attr-defined]
    assert collect.records[-1].trace_id == trace  # type: ignore[attr-defined]
