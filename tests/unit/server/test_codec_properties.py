"""Property tests: random shapes, datatypes and values survive encode → decode unchanged."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shipyard.server.codec import (
    InferRequest,
    RequestedOutput,
    decode_infer_request,
    encode_infer_response,
)
from shipyard.spec import DType

NUMERIC = [d for d in DType if d is not DType.BYTES]
BUDGET = settings(max_examples=150, deadline=None)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn, *, finite: bool) -> tuple[DType, np.ndarray]:
    dtype = draw(st.sampled_from([*NUMERIC, DType.BYTES]))
    shape = draw(shapes)
    if dtype is DType.BYTES:
        text = st.text(max_size=6) if finite else st.binary(max_size=6)
        items = draw(st.lists(text, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        arr = np.empty(len(items), dtype=object)
        arr[:] = [s.encode() if isinstance(s, str) else s for s in items]
        return dtype, arr.reshape(shape)
    elements = None
    if dtype.to_numpy().kind == "f":
        elements = st.floats(
            allow_nan=not finite,
            allow_infinity=not finite,
            width=dtype.to_numpy().itemsize * 8,
        )
    return dtype, draw(hnp.arrays(dtype.to_numpy(), shape, elements=elements))


def _respond(arr: np.ndarray, binary: bool) -> tuple[bytes, int | None]:
    req = InferRequest(None, {}, [], [RequestedOutput("t", binary)], False)
    body, headers = encode_infer_response(req, {"t": arr}, model_name="m", model_version="1")
    n = dict(headers).get(b"inference-header-content-length")
    return body, int(n) if n else None


def _as_request(body: bytes, n: int | None) -> tuple[bytes, int | None]:
    """Our response's outputs, re-sent as a request's inputs (same wire form)."""
    head = json.loads(body[:n] if n else body)
    inputs = head["outputs"]
    header = json.dumps({"inputs": inputs}).encode()
    if n is None:
        return header, None
    return header + body[n:], len(header)


def _assert_same(dtype: DType, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if dtype is DType.BYTES:
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@BUDGET
@given(tensors(finite=False))
def test_binary_round_trip_is_lossless_for_any_tensor(case: tuple[DType, np.ndarray]) -> None:
    dtype, arr = case
    body, n = _as_request(*_respond(arr, binary=True))
    (got,) = decode_infer_request(body, header_length=n).inputs
    assert got.datatype is dtype
    _assert_same(dtype, got.data, arr)


@BUDGET
@given(tensors(finite=True))
def test_json_round_trip_keeps_every_finite_value(case: tuple[DType, np.ndarray]) -> None:
    dtype, arr = case
    body, n = _respond(arr, binary=False)
    assert n is None or dtype is DType.BYTES
    request, header_length = _as_request(body, n)
    (got,) = decode_infer_request(request, header_length=header_length).inputs
    assert got.datatype is dtype
    _assert_same(dtype, got.data, arr)
