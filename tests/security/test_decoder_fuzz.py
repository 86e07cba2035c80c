"""Fuzz the request decoders: any input decodes or raises shipyard's own error, nothing else.

Targets: the V2 JSON decoder, the binary tensor extension (JSON header + raw bytes), the TF
Serving ``:predict`` decoder and the gRPC ``ModelInferRequest`` decoder. Inputs are arbitrary
bytes, and structured-but-wrong documents (right keys, wrong types, lying sizes, hostile
shapes). A decoder that raises anything but a ShipyardError would answer 500. Budgets are
bounded (``max_examples``) so the file runs in well under a minute.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import InvalidInputError, ShipyardError
from shipyard.server.codec import DecodeLimits, decode_infer_request, decode_tfs_predict
from shipyard.server.grpc import inference_pb2 as pb
from shipyard.server.grpc_service import decode_request
from shipyard.spec import DType, Signature, TensorSpec

BUDGET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = DecodeLimits(
    max_elements=4096, max_json_depth=16, max_bytes_element_bytes=64, allow_nan=False
)
DTYPES = [d.value for d in DType]
SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
)

# hostile scalars: huge and negative ints, floats, wrong types
ints = st.one_of(
    st.integers(-5, 40),
    st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**64 - 1, -(2**63)]),
)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(max_size=8), st.binary(max_size=8)
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
shapes = st.one_of(
    st.lists(ints, max_size=5),
    st.lists(st.integers(0, 4), min_size=18, max_size=20),  # rank past the limit
    json_values,
)


@st.composite
def v2_inputs(draw: st.DrawFn, *, binary: bool) -> dict[str, Any]:
    inp: dict[str, Any] = {
        "name": draw(st.one_of(st.just("x"), st.text(max_size=4), json_values)),
        "datatype": draw(st.one_of(st.sampled_from(DTYPES), st.text(max_size=6), json_values)),
        "shape": draw(shapes),
    }
    if binary:
        inp["parameters"] = {"binary_data_size": draw(st.one_of(ints, json_values))}
    else:
        inp["data"] = draw(
            st.one_of(
                st.lists(json_scalars, max_size=12),
                st.lists(st.lists(json_scalars, max_size=4), max_size=4),
                json_values,
                st.lists(st.fixed_dictionaries({"b64": st.text(max_size=12)}), max_size=3),
            )
        )
    if draw(st.booleans()):
        inp[draw(st.text(max_size=6))] = draw(json_values)  # unknown member
    return inp


@st.composite
def v2_documents(draw: st.DrawFn, *, binary: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": draw(st.lists(v2_inputs(binary=binary), max_size=3))}
    if draw(st.booleans()):
        doc["parameters"] = draw(json_values)
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.one_of(json_values, st.lists(st.fixed_dictionaries({"name": json_values})))
        )
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    return doc


def _decodes_or_refuses(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a decoder: a result, or None when it raised one of our own errors."""
    try:
        return call(*args, **kwargs)
    except ShipyardError as exc:
        if not (exc.code and exc.message):  # pragma: no cover
            raise AssertionError(f"a refusal must carry a code and a message: {exc!r}") from exc
        return None


# ---- V2 JSON ----------------------------------------------------------------------------


@BUDGET
@given(st.binary(max_size=256))
def test_v2_json_decoder_on_arbitrary_bytes(body: bytes) -> None:
    _decodes_or_refuses(decode_infer_request, body, limits=LIMITS)


@BUDGET
@given(v2_documents())
def test_v2_json_decoder_on_structured_wrong_documents(doc: dict[str, Any]) -> None:
    body = orjson.dumps(doc)
    request = _decodes_or_refuses(decode_infer_request, body, limits=LIMITS)
    if request is not None:  # what decodes respects the limits it was given
        for inp in request.inputs:
            assert inp.data.size <= LIMITS.max_elements
            assert inp.data.shape == inp.shape
            if inp.data.dtype.kind == "f":
                assert np.isfinite(inp.data).all()


@BUDGET
@given(st.integers(1, 3000), st.sampled_from([b"[", b'{"a":']))
def test_v2_json_decoder_on_deep_nesting(levels: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    deep = opener * levels + b"1" + closer * levels
    for body in (
        deep,
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":' + deep + b"}]}",
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"p":' + deep + b"}",
    ):
        _decodes_or_refuses(decode_infer_request, body, limits=LIMITS)


# ---- binary tensor extension ------------------------------------------------------------


@BUDGET
@given(v2_documents(binary=True), st.binary(max_size=96), ints)
def test_binary_decoder_with_lying_lengths(
    doc: dict[str, Any], tail: bytes, header_shift: int
) -> None:
    head = orjson.dumps(doc)
    body = head + tail
    for header_length in (len(head), len(head) + header_shift, -header_shift):
        _decodes_or_refuses(decode_infer_request, body, header_length=header_length, limits=LIMITS)


@BUDGET
@given(st.binary(max_size=256), st.integers(-10, 300))
def test_binary_decoder_on_arbitrary_bytes(body: bytes, header_length: int) -> None:
    _decodes_or_refuses(decode_infer_request, body, header_length=header_length, limits=LIMITS)


@BUDGET
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=4), ints)
def test_binary_bytes_tensors_with_lying_prefixes(
    items: list[tuple[int, bytes]], count: Any
) -> None:
    raw = b"".join(struct.pack("<I", n) + b for n, b in items)
    inp = {
        "name": "s",
        "datatype": "BYTES",
        "shape": [count],
        "parameters": {"binary_data_size": len(raw)},
    }
    head = orjson.dumps({"inputs": [inp]})
    _decodes_or_refuses(decode_infer_request, head + raw, header_length=len(head), limits=LIMITS)


# ---- TF Serving -------------------------------------------------------------------------

tfs_bodies = st.one_of(
    st.fixed_dictionaries({"instances": json_values}),
    st.fixed_dictionaries({"inputs": json_values}),
    st.fixed_dictionaries({"instances": json_values, "inputs": json_values}),
    st.fixed_dictionaries(
        {"instances": st.lists(st.dictionaries(st.sampled_from(["x", "b64", "y"]), json_values))}
    ),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(st.sampled_from(["x", "y"]), st.lists(json_values))}
    ),
    json_values,
)


@BUDGET
@given(tfs_bodies, st.booleans())
def test_tfs_decoder_on_structured_wrong_documents(doc: Any, with_signature: bool) -> None:
    body = orjson.dumps(doc)
    signature = SIGNATURE if with_signature else None
    _decodes_or_refuses(decode_tfs_predict, body, signature, limits=LIMITS)


@BUDGET
@given(st.binary(max_size=256))
def test_tfs_decoder_on_arbitrary_bytes(body: bytes) -> None:
    _decodes_or_refuses(decode_tfs_predict, body, SIGNATURE, limits=LIMITS)


@BUDGET
@given(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]), st.booleans())
def test_tfs_decoder_nan_policy(token: bytes, allow: bool) -> None:
    limits = DecodeLimits(max_elements=64, allow_nan=allow)
    body = b'{"instances": [[' + token + b", 1, 2, 3]]}"
    got = _decodes_or_refuses(decode_tfs_predict, body, SIGNATURE, limits=limits)
    assert (got is not None) == allow


# ---- gRPC -------------------------------------------------------------------------------


@st.composite
def grpc_requests(draw: st.DrawFn) -> Any:
    req = pb.ModelInferRequest(model_name="tiny")
    n = draw(st.integers(0, 3))
    for _ in range(n):
        t = req.inputs.add(
            name=draw(st.text(max_size=4)),
            datatype=draw(st.one_of(st.sampled_from(DTYPES), st.text(max_size=5))),
        )
        t.shape.extend(
            draw(
                st.lists(
                    st.one_of(st.integers(-3, 8), st.sampled_from([2**31, 2**62, -(2**63)])),
                    max_size=18,
                )
            )
        )
        which = draw(st.sampled_from(["fp32", "int", "bytes", "bool", "none"]))
        if which == "fp32":
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        elif which == "int":
            t.contents.int_contents.extend(
                draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8))
            )
        elif which == "bytes":
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
        elif which == "bool":
            t.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=8)))
    if draw(st.booleans()):
        req.raw_input_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=4)))
    return req


@BUDGET
@given(grpc_requests())
def test_grpc_decoder_on_structured_wrong_requests(request: Any) -> None:
    tensors = _decodes_or_refuses(decode_request, request, 4096, 64)
    if tensors is not None:
        assert all(a.size <= 4096 for a in tensors.values())


@BUDGET
@given(st.binary(max_size=200))
def test_grpc_decoder_on_arbitrary_wire_bytes(wire: bytes) -> None:
    try:
        request = pb.ModelInferRequest.FromString(wire)
    except Exception:  # not a protobuf message: grpc refuses it before our code runs
        return
    _decodes_or_refuses(decode_request, request, 4096, 64)


def test_the_harness_can_fail() -> None:
    """``_decodes_or_refuses`` lets a foreign exception through (so the fuzz tests can fail)."""

    def broken(_: bytes) -> None:
        raise IndexError("a bug")

    def refuses() -> None:
        raise InvalidInputError("x must be y")

    with pytest.raises(IndexError):
        _decodes_or_refuses(broken, b"")
    assert _decodes_or_refuses(refuses) is None
