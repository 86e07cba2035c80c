"""The attack suite: each case sends one attack to a real hardened server on 127.0.0.1.

Every case asserts the exact status (HTTP, or gRPC code) and the stable error ``code`` of the
defence it targets, so removing that defence fails it; after every case the server must still
be ready and answer a normal inference request correctly (the autouse ``stays_healthy``).
Categories (listed in SECURITY.md): auth bypass and scope escalation, management exposure,
path traversal, oversized bodies, deep nesting, binary tensor headers that lie, shapes meant
to overflow, huge BYTES elements, NaN/Inf, unknown fields, slow clients, oversized heads,
request smuggling shapes, gRPC.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest

from shipyard.registry import ModelRegistry
from shipyard.server.grpc import inference_pb2 as pb
from shipyard.server.grpc import inference_pb2_grpc as pb_grpc
from tests.security.conftest import (
    BODY,
    CLIENT_TIMEOUT_S,
    MAX_BODY,
    MAX_ELEMENT,
    MAX_HEADER,
    Fort,
    assert_healthy,
    parse_response,
    raw_http,
    request_bytes,
)

INFER = "/v2/models/tiny/infer"


@pytest.fixture(autouse=True)
def stays_healthy(fort: Fort) -> Iterator[None]:
    yield
    assert_healthy(fort)


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def _raw_error(raw: bytes, status: int, code: str) -> None:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:400]
    assert headers[b"content-type"].startswith(b"application/json"), raw[:400]
    assert json.loads(body)["code"] == code, body
    assert b"Traceback" not in body


def _post(fort: Fort, path: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers = {**fort.bearer(token), **headers}
    with httpx.Client(timeout=10) as c:
        return c.post(f"{fort.http}{path}", headers=headers, **kw)


def _get(fort: Fort, path: str, token: str | None, base: str | None = None) -> httpx.Response:
    with httpx.Client(timeout=10) as c:
        return c.get(f"{base or fort.http}{path}", headers=fort.bearer(token) if token else {})


def _infer_json(fort: Fort, doc: Any) -> httpx.Response:
    return _post(fort, INFER, fort.infer, content=orjson.dumps(doc))


def _infer_raw(fort: Fort, content: bytes) -> httpx.Response:
    return _post(fort, INFER, fort.infer, content=content)


def _deep(levels: int, leaf: bytes = b"1") -> bytes:
    return b"[" * levels + leaf + b"]" * levels


def _x(**over: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], **over}


# ---- auth bypass and scope escalation ---------------------------------------------------

_AUTH: dict[str, Callable[[Fort], dict[str, str]]] = {
    "missing-token": lambda f: {},
    "not-a-token": lambda f: {"Authorization": "Bearer garbage"},
    "wrong-secret": lambda f: {"Authorization": f"Bearer {f.infer[:-4]}AAAA"},
    "expired-token": lambda f: f.bearer(f.expired),
    "revoked-token": lambda f: f.bearer(f.revoked),
    "basic-scheme": lambda f: {"Authorization": f"Basic {f.infer}"},
    "token-without-scheme": lambda f: {"Authorization": f.infer},
    "token-case-changed": lambda f: {"Authorization": f"Bearer {f.infer.swapcase()}"},
    "token-in-cookie": lambda f: {"Cookie": f"token={f.infer}"},
    "token-in-other-header": lambda f: {"X-Api-Key": f.infer},
    "truncated-token": lambda f: {"Authorization": f"Bearer {f.infer[:12]}"},
}


@pytest.mark.parametrize("attack", list(_AUTH), ids=list(_AUTH))
def test_auth_bypass_is_401(fort: Fort, attack: str) -> None:
    r = _post(fort, INFER, None, json=BODY, headers=_AUTH[attack](fort))
    _error(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("param", ["access_token", "token", "authorization"])
def test_token_in_query_string_is_not_accepted(fort: Fort, param: str) -> None:
    r = _post(fort, f"{INFER}?{param}={fort.infer}", None, json=BODY)
    _error(r, 401, "unauthenticated")


def test_header_case_is_normalised_but_the_token_is_not(fort: Fort) -> None:
    # RFC 9110: header names and the auth scheme are case-insensitive; the token is not
    raw = raw_http(
        fort.port,
        request_bytes("GET", "/v2/models/tiny", {"AUTHORIZATION": f"bEaReR {fort.read}"}),
    )
    assert parse_response(raw)[0] == 200
    upper = request_bytes(
        "GET", "/v2/models/tiny", {"AUTHORIZATION": f"bEaReR {fort.read.upper()}"}
    )
    _raw_error(raw_http(fort.port, upper), 401, "unauthenticated")


def test_a_second_authorization_header_cannot_override_the_first(fort: Fort) -> None:
    data = (
        b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer junk\r\nAuthorization: Bearer " + fort.read.encode() + b"\r\n\r\n"
    )
    _raw_error(raw_http(fort.port, data), 401, "unauthenticated")


_SCOPES: dict[str, tuple[str, str, str]] = {
    # case: (method, path, role whose token lacks the scope)
    "read-token-cannot-infer": ("POST", INFER, "read"),
    "feedback-token-cannot-infer": ("POST", INFER, "feedback"),
    "read-token-cannot-tfs-predict": ("POST", "/v1/models/tiny:predict", "read"),
    "read-token-cannot-tfs-classify": ("POST", "/v1/models/tiny:classify", "read"),
    "infer-token-cannot-read-metadata": ("GET", "/v2/models/tiny", "infer"),
    "infer-token-cannot-read-metrics": ("GET", "/metrics", "infer"),
    "infer-token-cannot-read-monitoring": ("GET", "/v2/models/tiny/monitoring", "infer"),
    "infer-token-cannot-send-feedback": ("POST", "/v2/models/tiny/feedback", "infer"),
    "read-token-cannot-send-feedback": ("POST", "/v2/models/tiny/feedback", "read"),
}


@pytest.mark.parametrize("case", list(_SCOPES), ids=list(_SCOPES))
def test_scope_escalation_is_403(fort: Fort, case: str) -> None:
    method, path, role = _SCOPES[case]
    with httpx.Client(timeout=10) as c:
        r = c.request(
            method, f"{fort.http}{path}", json=BODY, headers=fort.bearer(getattr(fort, role))
        )
    _error(r, 403, "forbidden")


@pytest.mark.parametrize("role", ["infer", "read", "feedback"])
def test_admin_routes_need_admin(fort: Fort, role: str) -> None:
    with httpx.Client(timeout=10) as c:
        unload = c.post(
            f"{fort.management}/v2/repository/models/tiny/unload",
            headers=fort.bearer(getattr(fort, role)),
        )
        index = c.post(f"{fort.management}/v2/repository/index")
    _error(unload, 403, "forbidden")
    _error(index, 401, "unauthenticated")


def test_an_open_probe_path_cannot_reach_a_scoped_route(fort: Fort) -> None:
    # the server does not normalise dot segments: the path is not the open probe path
    raw = raw_http(fort.port, request_bytes("GET", "/v2/health/ready/../../models/tiny"))
    _raw_error(raw, 401, "unauthenticated")


def test_a_read_token_cannot_infer_through_get(fort: Fort) -> None:
    _error(_get(fort, INFER, fort.read), 404, "not-found")


def test_management_listener_is_bound_to_loopback_only(fort: Fort) -> None:
    """The management port listens on 127.0.0.1 only (read from the kernel's socket table)."""
    port = f"{fort.management_port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and local.endswith(f":{port}"):
                    listening.append(local)
    assert listening == ["0100007F:" + port], listening  # 127.0.0.1, no other address
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", fort.management_port)) == 0


# ---- path traversal ---------------------------------------------------------------------

_TRAVERSAL: dict[str, tuple[str, str, str, int, str]] = {
    # case: (method, raw path, role, status, code); sent raw, byte for byte
    "infer-encoded-slashes": (
        "POST",
        "/v2/models/..%2f..%2fetc/infer",
        "infer",
        404,
        "model-not-found",
    ),
    "infer-encoded-dots": ("POST", "/v2/models/%2e%2e/infer", "infer", 404, "model-not-found"),
    "infer-nul-in-name": ("POST", "/v2/models/tiny%00/infer", "infer", 404, "model-not-found"),
    "infer-dotdot-version": (
        "POST",
        "/v2/models/tiny/versions/../infer",
        "infer",
        404,
        "version-not-found",
    ),
    "infer-absolute-path": (
        "POST",
        "/v2/models//etc/passwd/infer",
        "infer",
        404,
        "model-not-found",
    ),
    "metadata-nul-version": (
        "GET",
        "/v2/models/tiny/versions/%00",
        "read",
        404,
        "version-not-found",
    ),
    "metadata-dotdot-version": (
        "GET",
        "/v2/models/tiny/versions/..",
        "read",
        404,
        "version-not-found",
    ),
    "metadata-absolute-path": ("GET", "/v2/models//etc/passwd", "read", 404, "not-found"),
    "ready-encoded-dots": ("GET", "/v2/models/%2e%2e/ready", "read", 404, "model-not-found"),
    "tfs-status-encoded-slashes": ("GET", "/v1/models/..%2F..%2Fetc", "read", 404, "not-found"),
    "tfs-label-traversal": (
        "POST",
        "/v1/models/tiny/labels/..%2f..:predict",
        "infer",
        404,
        "not-found",
    ),
    "tfs-nul-in-name": ("POST", "/v1/models/tiny%00:predict", "infer", 404, "model-not-found"),
    "tfs-dotdot-version": (
        "GET",
        "/v1/models/tiny/versions/../metadata",
        "read",
        404,
        "version-not-found",
    ),
}


@pytest.mark.parametrize("case", list(_TRAVERSAL), ids=list(_TRAVERSAL))
def test_path_traversal_on_rest_routes(fort: Fort, case: str) -> None:
    method, path, role, status, code = _TRAVERSAL[case]
    body = orjson.dumps(BODY if "infer" in path else {"instances": [[1, 2, 3, 4]]})
    headers = {**fort.bearer(getattr(fort, role)), "Content-Length": str(len(body))}
    raw = raw_http(
        fort.port, request_bytes(method, path, headers, body if method == "POST" else b"")
    )
    _raw_error(raw, status, code)


_LOAD: dict[str, tuple[str, int, str]] = {
    "encoded-dots": ("%2e%2e", 400, "invalid-name"),
    "nul-in-name": ("tiny%00", 400, "invalid-name"),
    "dotdot-version": ("tiny:..", 400, "invalid-model-ref"),
    "dotdot-alias": ("tiny@..", 400, "invalid-name"),
    "encoded-slashes": ("..%2F..%2Fetc%2Fpasswd", 404, "not-found"),
    "absolute-path": ("%2Fetc%2Fpasswd", 404, "not-found"),
    "version-past-sqlite": ("tiny:99999999999999999999", 400, "invalid-model-ref"),
    "unicode-digit-version": ("tiny:%C2%B2", 400, "invalid-model-ref"),
    "negative-version": ("tiny:-1", 400, "invalid-model-ref"),
}


@pytest.mark.parametrize("case", list(_LOAD), ids=list(_LOAD))
def test_path_traversal_on_the_repository_load_api(fort: Fort, case: str) -> None:
    name, status, code = _LOAD[case]
    with httpx.Client(timeout=10) as c:
        r = c.post(
            f"{fort.management}/v2/repository/models/{name}/load", headers=fort.bearer(fort.admin)
        )
        _error(r, status, code)
        index = c.post(f"{fort.management}/v2/repository/index", headers=fort.bearer(fort.admin))
    # a refused ref leaves no row behind (it would make the server report not ready)
    assert [row["name"] for row in index.json()] == ["tiny"], index.json()


# ---- oversized bodies -------------------------------------------------------------------

_BIG_CL: dict[str, tuple[int, str, str]] = {
    "infer": (0, INFER, "infer"),
    "tfs-predict": (0, "/v1/models/tiny:predict", "infer"),
    "feedback": (0, "/v2/models/tiny/feedback", "feedback"),
    "management-index": (1, "/v2/repository/index", "admin"),
}


@pytest.mark.parametrize("case", list(_BIG_CL), ids=list(_BIG_CL))
def test_oversized_content_length_is_413_before_the_body_is_read(fort: Fort, case: str) -> None:
    mgmt, path, role = _BIG_CL[case]
    headers = {**fort.bearer(getattr(fort, role)), "Content-Length": str(10**12)}
    # no body is sent at all: the answer must come from the header alone
    raw = raw_http(
        fort.management_port if mgmt else fort.port, request_bytes("POST", path, headers)
    )
    _raw_error(raw, 413, "payload-too-large")


def _chunked(total: int, chunk: int = 8192) -> bytes:
    n = total // chunk + 1
    return b"".join(b"%x\r\n%s\r\n" % (chunk, b" " * chunk) for _ in range(n)) + b"0\r\n\r\n"


@pytest.mark.parametrize("path", [INFER, "/v1/models/tiny:predict"], ids=["infer", "tfs-predict"])
def test_chunked_body_over_the_limit_is_413(fort: Fort, path: str) -> None:
    headers = {**fort.bearer(fort.infer), "Transfer-Encoding": "chunked"}
    raw = raw_http(fort.port, request_bytes("POST", path, headers, _chunked(MAX_BODY + 1)))
    _raw_error(raw, 413, "payload-too-large")


def test_content_length_that_lies_high_times_out_with_408(fort: Fort) -> None:
    headers = {**fort.bearer(fort.infer), "Content-Length": "50000"}
    started = time.monotonic()
    raw = raw_http(fort.port, request_bytes("POST", INFER, headers, b'{"inputs": ['))
    _raw_error(raw, 408, "request-timeout")
    assert time.monotonic() - started < CLIENT_TIMEOUT_S + 3


# ---- deep nesting -----------------------------------------------------------------------

_DEEP: dict[str, tuple[str, str, bytes]] = {
    "inputs-5000-levels": (INFER, "infer", b'{"inputs":' + _deep(5000) + b"}"),
    "parameters-100-levels": (
        INFER,
        "infer",
        b'{"inputs":[' + orjson.dumps(_x()) + b'],"parameters":{"a":' + _deep(100) + b"}}",
    ),
    "data-100-levels": (
        INFER,
        "infer",
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":' + _deep(100) + b"}]}",
    ),
    "unknown-member-100-levels": (
        INFER,
        "infer",
        b'{"inputs":[' + orjson.dumps(_x()) + b'],"evil":' + _deep(100) + b"}",
    ),
    "unknown-input-member-100-levels": (
        INFER,
        "infer",
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"evil":'
        + _deep(100)
        + b"}]}",
    ),
    "tfs-instances-5000-levels": (
        "/v1/models/tiny:predict",
        "infer",
        b'{"instances":' + _deep(5000) + b"}",
    ),
    "tfs-regress-5000-levels": (
        "/v1/models/tiny:regress",
        "infer",
        b'{"examples":' + _deep(5000) + b"}",
    ),
    "feedback-5000-levels": ("/v2/models/tiny/feedback", "feedback", _deep(5000)),
}


@pytest.mark.parametrize("case", list(_DEEP), ids=list(_DEEP))
def test_deep_json_is_400(fort: Fort, case: str) -> None:
    path, role, body = _DEEP[case]
    _error(_post(fort, path, getattr(fort, role), content=body), 400, "invalid-data")


def test_deep_management_index_body_is_400(fort: Fort) -> None:
    with httpx.Client(timeout=10) as c:
        r = c.post(
            f"{fort.management}/v2/repository/index",
            headers=fort.bearer(fort.admin),
            content=_deep(5000),
        )
    _error(r, 400, "invalid-data")


# ---- binary tensor data whose lengths lie -----------------------------------------------

_HEAD = orjson.dumps(
    {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
)
_RAW = struct.pack("<4f", 1, 2, 3, 4)


def _binary(fort: Fort, body: bytes, header_length: str) -> httpx.Response:
    headers = {
        "Inference-Header-Content-Length": header_length,
        "Content-Type": "application/octet-stream",
    }
    return _post(fort, INFER, fort.infer, content=body, headers=headers)


def _head(**param: Any) -> bytes:
    inp = {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": param}
    return orjson.dumps({"inputs": [inp]})


def _bytes_head(size: int) -> bytes:
    inp = {"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": size}}
    return orjson.dumps({"inputs": [inp]})


_BINARY: dict[str, tuple[bytes, str | None, int, str]] = {
    # case: (body, Inference-Header-Content-Length (None: the JSON's length), status, code)
    "header-length-past-body": (_HEAD + _RAW, str(len(_HEAD) + 1000), 400, "invalid-data"),
    "header-length-negative": (_HEAD + _RAW, "-5", 400, "invalid-data"),
    "header-length-not-a-number": (_HEAD + _RAW, "0x10", 400, "invalid-data"),
    "header-length-huge": (_HEAD + _RAW, "9" * 30, 400, "invalid-data"),
    "header-length-splits-the-json": (_HEAD + _RAW, str(len(_HEAD) - 3), 400, "invalid-data"),
    "binary-size-past-data": (_HEAD + _RAW[:8], None, 400, "invalid-data"),
    "binary-size-negative": (_head(binary_data_size=-16) + _RAW, None, 400, "invalid-data"),
    "binary-size-not-an-integer": (_head(binary_data_size="16") + _RAW, None, 400, "invalid-data"),
    "bytes-left-over": (_HEAD + _RAW + b"\0" * 4, None, 400, "invalid-data"),
    "binary-size-not-the-shape": (
        _head(binary_data_size=8) + _RAW[:8],
        None,
        400,
        "signature-mismatch",
    ),
    "bytes-prefix-4gib": (
        _bytes_head(8) + struct.pack("<I", 2**32 - 1) + b"abcd",
        None,
        413,
        "payload-too-large",
    ),
    "bytes-prefix-past-data": (
        _bytes_head(8) + struct.pack("<I", 100) + b"abcd",
        None,
        400,
        "invalid-data",
    ),
}


@pytest.mark.parametrize("case", list(_BINARY), ids=list(_BINARY))
def test_binary_lengths_that_lie(fort: Fort, case: str) -> None:
    body, header_length, status, code = _BINARY[case]
    if header_length is None:
        header_length = str(body.index(b"}]}") + 3)
    _error(_binary(fort, body, header_length), status, code)


def test_binary_bool_bytes_other_than_0_and_1(fort: Fort) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [4],
                    "datatype": "BOOL",
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    )
    _error(_binary(fort, head + b"\x00\x01\x02\xff", str(len(head))), 400, "invalid-data")


# ---- shapes meant to overflow -----------------------------------------------------------

_SHAPES: dict[str, tuple[dict[str, Any], int, str]] = {
    "product-overflows-int64": (_x(shape=[2**32, 2**32], data=[1]), 413, "payload-too-large"),
    "huge-dims-times-zero": (_x(shape=[2**62, 2**62, 0], data=[]), 413, "payload-too-large"),
    "dim-past-int64": (_x(shape=[1, 2**64 - 1], data=[1]), 413, "payload-too-large"),
    "negative-dim": (_x(shape=[-1, 4]), 400, "signature-mismatch"),
    "negative-dims-cancel": (_x(shape=[-2, -2]), 400, "signature-mismatch"),
    "count-below-shape": (_x(shape=[2, 4]), 400, "signature-mismatch"),
    "count-above-shape": (_x(shape=[1, 2]), 400, "signature-mismatch"),
    "rank-17": (_x(shape=[1] * 17, data=[1]), 400, "signature-mismatch"),
    "float-dim": (_x(shape=[1.0, 4]), 400, "signature-mismatch"),
    "bool-dim": (_x(shape=[True, 4]), 400, "signature-mismatch"),
    "string-shape": (_x(shape="1,4"), 400, "signature-mismatch"),
    "shape-the-model-refuses": (_x(shape=[1, 5], data=[1, 2, 3, 4, 5]), 400, "signature-mismatch"),
    "ragged-data": (_x(shape=[2, 2], data=[[1, 2], [3]]), 400, "invalid-data"),
}


@pytest.mark.parametrize("case", list(_SHAPES), ids=list(_SHAPES))
def test_shape_attacks(fort: Fort, case: str) -> None:
    inp, status, code = _SHAPES[case]
    _error(_infer_json(fort, {"inputs": [inp]}), status, code)


# ---- huge BYTES elements ----------------------------------------------------------------


def test_huge_bytes_element_in_json(fort: Fort) -> None:
    inp = {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a" * (MAX_ELEMENT + 1)]}
    _error(_infer_json(fort, {"inputs": [inp]}), 413, "payload-too-large")


def test_huge_bytes_element_in_base64(fort: Fort) -> None:
    import base64

    b64 = base64.b64encode(b"\0" * (MAX_ELEMENT + 1)).decode()
    inp = {"name": "x", "shape": [1], "datatype": "BYTES", "data": [{"b64": b64}]}
    _error(_infer_json(fort, {"inputs": [inp]}), 413, "payload-too-large")


# ---- NaN / Inf (this server refuses them: server.allow_nan = false) ---------------------

_NAN: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "v2-nan-token": (
        INFER,
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,2,3,4]}]}',
        {},
    ),
    "v2-number-overflows-to-inf": (
        INFER,
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1e309,2,3,4]}]}',
        {},
    ),
    "v2-binary-nan": (
        INFER,
        _HEAD + struct.pack("<4f", float("nan"), 2, 3, 4),
        {"Inference-Header-Content-Length": str(len(_HEAD))},
    ),
    "v2-binary-inf": (
        INFER,
        _HEAD + struct.pack("<4f", float("inf"), 2, 3, 4),
        {"Inference-Header-Content-Length": str(len(_HEAD))},
    ),
    "tfs-nan-token": ("/v1/models/tiny:predict", b'{"instances":[[NaN,1,2,3]]}', {}),
    "tfs-infinity-token": ("/v1/models/tiny:predict", b'{"inputs":{"x":[[-Infinity,1,2,3]]}}', {}),
    "tfs-regress-nan": ("/v1/models/tiny:regress", b'{"examples":[{"x":[NaN,1,2,3]}]}', {}),
}


@pytest.mark.parametrize("case", list(_NAN), ids=list(_NAN))
def test_nan_and_inf_are_refused_by_policy(fort: Fort, case: str) -> None:
    path, body, headers = _NAN[case]
    _error(_post(fort, path, fort.infer, content=body, headers=headers), 400, "invalid-data")


# ---- unknown fields ---------------------------------------------------------------------


def test_unknown_fields_are_ignored_and_change_nothing(fort: Fort) -> None:
    doc = {
        "inputs": [{**_x(), "evil": {"$where": "1"}, "__proto__": {"admin": True}}],
        "evil": [1, 2, 3],
        "model_name": "other",
    }
    plain, tricked = _infer_json(fort, BODY), _infer_json(fort, doc)
    assert tricked.status_code == 200, tricked.text
    assert tricked.json() == plain.json()


_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-datatype": ({"inputs": [_x(datatype="FP128")]}, "invalid-data"),
    "duplicate-input-names": ({"inputs": [_x(), _x()]}, "invalid-data"),
    "inputs-not-a-list": ({"inputs": {"x": [1, 2, 3, 4]}}, "invalid-data"),
    "parameters-not-an-object": ({"inputs": [_x()], "parameters": [1]}, "invalid-data"),
    "unknown-requested-output": (
        {"inputs": [_x()], "outputs": [{"name": "../../etc"}]},
        "signature-mismatch",
    ),
}


@pytest.mark.parametrize("case", list(_FIELDS), ids=list(_FIELDS))
def test_wrong_fields_are_400(fort: Fort, case: str) -> None:
    doc, code = _FIELDS[case]
    _error(_infer_json(fort, doc), 400, code)


# ---- slow clients -----------------------------------------------------------------------


def test_slowloris_headers_time_out_and_others_are_served(fort: Fort) -> None:
    head = request_bytes("GET", "/v2/health/live")
    with socket.create_connection(("127.0.0.1", fort.port), timeout=10) as s:
        started = time.monotonic()
        served = 0
        answer = b""
        for byte in head[:-2]:  # never the final CRLF
            try:
                s.sendall(bytes([byte]))
            except OSError:  # the server hung up: it already answered
                break
            if served < 3:
                assert_healthy(fort)  # others are served while this client dribbles
                served += 1
            time.sleep(0.15)
            if time.monotonic() - started > CLIENT_TIMEOUT_S + 3:
                break
        s.settimeout(5)
        while chunk := s.recv(65536):
            answer += chunk
    elapsed = time.monotonic() - started
    _raw_error(answer, 408, "request-timeout")
    assert elapsed < CLIENT_TIMEOUT_S + 3, elapsed


def test_a_client_that_connects_and_sends_nothing_is_dropped(fort: Fort) -> None:
    with socket.create_connection(("127.0.0.1", fort.port), timeout=10) as s:
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    _raw_error(answer, 408, "request-timeout")
    assert time.monotonic() - started < CLIENT_TIMEOUT_S + 3


def test_many_slow_clients_do_not_starve_a_normal_one(fort: Fort) -> None:
    socks = [socket.create_connection(("127.0.0.1", fort.port), timeout=10) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")
        assert_healthy(fort)
    finally:
        for s in socks:
            s.close()


# ---- oversized heads --------------------------------------------------------------------

_HEADS: dict[str, bytes] = {
    "one-huge-header": request_bytes("GET", "/v2/health/live", {"X-Big": "a" * (MAX_HEADER + 1)}),
    "huge-url": request_bytes("GET", "/v2/models/" + "a" * (MAX_HEADER + 1)),
    "many-headers": request_bytes(
        "GET", "/v2/health/live", {f"X-H{i}": "v" * 20 for i in range(MAX_HEADER // 20)}
    ),
    "endless-header-line": b"GET /v2/health/live HTTP/1.1\r\nX-Endless: " + b"a" * (4 * MAX_HEADER),
}


@pytest.mark.parametrize("case", list(_HEADS), ids=list(_HEADS))
def test_oversized_head_is_431(fort: Fort, case: str) -> None:
    _raw_error(raw_http(fort.port, _HEADS[case]), 431, "headers-too-large")


# ---- request smuggling shapes -----------------------------------------------------------


def _smuggle(fort: Fort, lines: list[bytes], body: bytes) -> bytes:
    auth = b"Authorization: Bearer " + fort.infer.encode()
    head = [b"POST /v2/models/tiny/infer HTTP/1.1", b"Host: x", auth, *lines, b"", b""]
    return b"\r\n".join(head) + body


_INNER = b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"
_SMUGGLE: dict[str, tuple[list[bytes], bytes]] = {
    "cl-and-te": ([b"Content-Length: 4", b"Transfer-Encoding: chunked"], b"0\r\n\r\n" + _INNER),
    "te-and-cl": ([b"Transfer-Encoding: chunked", b"Content-Length: 4"], b"0\r\n\r\n" + _INNER),
    "duplicate-content-length": ([b"Content-Length: 2", b"Content-Length: 40"], b"{}" + _INNER),
    "obs-fold": ([b"X-Foo: a", b" Transfer-Encoding: chunked", b"Content-Length: 2"], b"{}"),
    "te-xchunked": ([b"Transfer-Encoding: xchunked"], b"2\r\n{}\r\n0\r\n\r\n"),
    "te-chunked-then-identity": (
        [b"Transfer-Encoding: chunked, identity"],
        b"2\r\n{}\r\n0\r\n\r\n",
    ),
    "negative-content-length": ([b"Content-Length: -1"], b""),
    "content-length-plus-sign": ([b"Content-Length: +2"], b"{}"),
    "bad-chunk-size": ([b"Transfer-Encoding: chunked"], b"zz\r\n{}\r\n0\r\n\r\n"),
    "space-before-colon": ([b"Content-Length : 2"], b"{}"),
}


@pytest.mark.parametrize("case", list(_SMUGGLE), ids=list(_SMUGGLE))
def test_request_smuggling_shapes_are_400(fort: Fort, case: str) -> None:
    lines, body = _SMUGGLE[case]
    raw = raw_http(fort.port, _smuggle(fort, lines, body))
    _raw_error(raw, 400, "malformed-request")
    # nothing smuggled got an answer of its own
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", raw)) == 1, raw


# ---- gRPC -------------------------------------------------------------------------------


@pytest.fixture
def stub(fort: Fort) -> Iterator[Any]:
    channel = grpc.insecure_channel(fort.server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _grpc_request(**over: Any) -> Any:
    req = pb.ModelInferRequest(model_name="tiny")
    tensor = req.inputs.add(name="x", datatype=over.pop("datatype", "FP32"))
    tensor.shape.extend(over.pop("shape", [1, 4]))
    req.raw_input_contents.extend(over.pop("raw", [struct.pack("<4f", 1, 2, 3, 4)]))
    assert not over
    return req


def _grpc_error(call: Callable[[], Any], status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value
    assert err.code() == status, err.details()
    assert err.details().startswith(f"{code}:"), err.details()
    assert "Traceback" not in err.details()


def _md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_grpc_without_a_token(fort: Fort, stub: Any) -> None:
    _grpc_error(
        lambda: stub.ModelInfer(_grpc_request()), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"
    )


def test_grpc_with_a_revoked_token(fort: Fort, stub: Any) -> None:
    _grpc_error(
        lambda: stub.ModelInfer(_grpc_request(), metadata=_md(fort.revoked)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )


def test_grpc_token_without_the_infer_scope(fort: Fort, stub: Any) -> None:
    _grpc_error(
        lambda: stub.ModelInfer(_grpc_request(), metadata=_md(fort.read)),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )


def test_grpc_repository_load_needs_admin(fort: Fort, stub: Any) -> None:
    request = pb.RepositoryModelLoadRequest(model_name="tiny")
    _grpc_error(
        lambda: stub.RepositoryModelLoad(request, metadata=_md(fort.infer)),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )


def test_grpc_repository_load_refuses_a_traversal_ref(fort: Fort, stub: Any) -> None:
    request = pb.RepositoryModelLoadRequest(model_name="../../etc/passwd")
    _grpc_error(
        lambda: stub.RepositoryModelLoad(request, metadata=_md(fort.admin)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-name",
    )


def test_grpc_oversized_message(fort: Fort, stub: Any) -> None:
    req = _grpc_request(shape=[MAX_BODY], raw=[b"\0" * (4 * MAX_BODY)])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req, metadata=_md(fort.infer))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


_GRPC: dict[str, tuple[dict[str, Any], grpc.StatusCode, str]] = {
    "raw-shorter-than-shape": (
        {"raw": [b"\0" * 8]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-input",
    ),
    "raw-longer-than-shape": (
        {"raw": [b"\0" * 64]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-input",
    ),
    "raw-count-not-inputs": (
        {"raw": [b"\0" * 16, b"\0" * 16]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-input",
    ),
    "huge-dims": (
        {"shape": [2**31, 2**31], "raw": [b""]},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "payload-too-large",
    ),
    "huge-dims-times-zero": (
        {"shape": [2**62, 2**62, 0], "raw": [b""]},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "payload-too-large",
    ),
    "negative-dim": ({"shape": [-1, 4]}, grpc.StatusCode.INVALID_ARGUMENT, "invalid-input"),
    "rank-17": (
        {"shape": [1] * 17, "raw": [b"\0" * 4]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-input",
    ),
    "unknown-datatype": ({"datatype": "FP128"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid-input"),
    "bytes-prefix-lies": (
        {"datatype": "BYTES", "shape": [1], "raw": [struct.pack("<I", 100) + b"abcd"]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-data",
    ),
    "nan-refused-by-policy": (
        {"raw": [struct.pack("<4f", float("nan"), 2, 3, 4)]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-data",
    ),
    "inf-refused-by-policy": (
        {"raw": [struct.pack("<4f", 1, float("-inf"), 3, 4)]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-data",
    ),
    "huge-bytes-element": (
        {"datatype": "BYTES", "shape": [1], "raw": [struct.pack("<I", 2**32 - 1) + b"abcd"]},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "payload-too-large",
    ),
}


@pytest.mark.parametrize("case", list(_GRPC), ids=list(_GRPC))
def test_grpc_decoder_attacks(fort: Fort, stub: Any, case: str) -> None:
    over, status, code = _GRPC[case]
    request = _grpc_request(**over)
    _grpc_error(lambda: stub.ModelInfer(request, metadata=_md(fort.infer)), status, code)


def test_grpc_admin_calls_are_audited_under_the_token_name(fort: Fort, stub: Any) -> None:
    request = pb.RepositoryModelLoadRequest(model_name="tiny")
    stub.RepositoryModelLoad(request, metadata=_md(fort.admin))
    with ModelRegistry.open(fort.server.settings) as reg:
        rows = [e for e in reg.audit_log() if e.action == "server.load" and e.target == "tiny"]
    assert rows and rows[-1].actor == "ops", rows[-1:]
    assert rows[-1].source.startswith("grpc:")


def test_concurrent_attacks_leave_the_server_healthy(fort: Fort) -> None:
    """A burst of mixed attacks from many threads at once, then a normal request."""
    bodies = [b"{", _deep(5000), orjson.dumps({"inputs": [_x(shape=[2**62, 2**62, 0])]})]
    statuses: list[int] = []

    def attack(i: int) -> None:
        r = _post(fort, INFER, fort.infer, content=bodies[i % len(bodies)])
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(set(statuses)) == [400, 413], statuses


def test_error_bodies_never_carry_internals(fort: Fort) -> None:
    r = _infer_raw(
        fort,
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": "'
        + b"\xff" * 10
        + b'"}]}',
    )
    body = _error(r, 400, "invalid-data")
    assert set(body) <= {"error", "code", "hint", "request_id"}
