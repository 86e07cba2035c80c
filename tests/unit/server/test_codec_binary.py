"""The binary tensor extension, checked byte for byte against tritonclient's own encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from shipyard.errors import InvalidData, InvalidInputError, PayloadTooLarge, SignatureMismatch
from shipyard.server.codec import (
    DecodeLimits,
    InferRequest,
    RequestedOutput,
    decode_infer_request,
    encode_infer_response,
)
from shipyard.spec import DType

ALL = list(DType)


def _sample(dtype: DType) -> np.ndarray:
    rng = np.random.default_rng(7)
    if dtype is DType.BYTES:
        return np.array([b"a", "é".encode(), b"", b"\x00\xff"] * 3, dtype=object).reshape(3, 4)
    if dtype is DType.BOOL:
        return rng.integers(0, 2, size=(3, 4)).astype(bool)
    np_dtype = dtype.to_numpy()
    if np_dtype.kind == "f":
        return rng.normal(size=(3, 4)).astype(np_dtype)
    info = np.iinfo(np_dtype)
    return rng.integers(info.min, info.max, size=(3, 4), dtype=np_dtype, endpoint=True)


def _triton_body(arr: np.ndarray, dtype: DType) -> tuple[bytes, int]:
    inp = httpclient.InferInput("x", list(arr.shape), dtype.value)
    inp.set_data_from_numpy(arr, binary_data=True)
    out = httpclient.InferRequestedOutput("y", binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outputs=[out])
    return bytes(body), int(json_size)


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: d.value)
def test_tritonclient_binary_request_decodes_exactly(dtype: DType) -> None:
    arr = _sample(dtype)
    body, json_size = _triton_body(arr, dtype)
    req = decode_infer_request(body, header_length=json_size)
    (got,) = req.inputs
    assert (got.name, got.datatype, got.shape) == ("x", dtype, (3, 4))
    if dtype is DType.BYTES:
        assert got.data.tolist() == arr.tolist()
    else:
        assert got.data.dtype == arr.dtype
        np.testing.assert_array_equal(got.data, arr)
    assert req.outputs == [RequestedOutput("y", True)]


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: d.value)
def test_our_binary_output_bytes_equal_tritonclients_input_bytes(dtype: DType) -> None:
    arr = _sample(dtype)
    triton_body, json_size = _triton_body(arr, dtype)
    req = InferRequest(None, {}, [], [RequestedOutput("y", True)], False)
    ours, headers = encode_infer_response(req, {"y": arr}, model_name="m", model_version="1")
    n = int(dict(headers)[b"inference-header-content-length"])
    assert ours[n:] == triton_body[json_size:]


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: d.value)
def test_tritonclient_parses_our_binary_and_json_responses(dtype: DType) -> None:
    arr = _sample(dtype)
    for binary in (True, False):
        if dtype is DType.BYTES and not binary:
            arr = np.array([b"text", "é".encode()], dtype=object)  # JSON needs UTF-8
        req = InferRequest("r1", {}, [], [RequestedOutput("y", binary)], False)
        body, headers = encode_infer_response(req, {"y": arr}, model_name="m", model_version="1")
        n = dict(headers).get(b"inference-header-content-length")
        result = httpclient.InferenceServerClient.parse_response_body(
            body, header_length=int(n) if n else None
        )
        got = result.as_numpy("y")
        assert got is not None
        if dtype is DType.BYTES:
            assert [
                bytes(v) if not isinstance(v, str) else v.encode() for v in got.ravel()
            ] == list(arr.ravel())
        else:
            np.testing.assert_array_equal(got.astype(arr.dtype), arr)
        assert result.get_response()["id"] == "r1"


def test_binary_data_output_parameter_is_the_default_for_unflagged_outputs() -> None:
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        }
    ).encode()
    req = decode_infer_request(header)
    assert req.binary_default is True
    ones = np.ones(2, np.float32)
    body, headers = encode_infer_response(
        req, {"a": ones, "b": ones}, model_name="m", model_version="1"
    )
    n = int(dict(headers)[b"inference-header-content-length"])
    a, b = json.loads(body[:n])["outputs"]
    assert a["parameters"] == {"binary_data_size": 8}
    assert b["data"] == [1.0, 1.0]
    assert body[n:] == ones.tobytes()


def _header(*inputs: dict) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _binary_input(name: str, shape: list[int], dtype: str, size: object) -> dict:
    return {
        "name": name,
        "shape": shape,
        "datatype": dtype,
        "parameters": {"binary_data_size": size},
    }


@pytest.mark.parametrize(
    ("declared", "actual", "error", "text"),
    [
        (20, 16, InvalidData, "must be a non-negative integer that fits the 16 binary bytes"),
        (16, 12, InvalidData, "fits the 12 binary bytes left"),
        (8, 16, SignatureMismatch, "must have 16 bytes of FP32. Got 8 instead"),
        (16, 20, InvalidData, "Got 4 bytes left over instead"),
        (-4, 16, InvalidData, "non-negative integer"),
        (True, 16, InvalidData, "non-negative integer"),
    ],
    ids=["bigger-than-body", "body-short", "short", "left-over", "negative", "bool"],
)
def test_binary_sizes_that_lie_are_refused_with_a_clear_message(
    declared: object, actual: int, error: type, text: str
) -> None:
    header = _header(_binary_input("x", [1, 4], "FP32", declared))
    with pytest.raises(error, match=text):
        decode_infer_request(header + b"\0" * actual, header_length=len(header))


def test_two_binary_inputs_take_consecutive_slices() -> None:
    a = np.arange(3, dtype=np.int32)
    b = np.array([1.5, 2.5], dtype=np.float64)
    header = _header(_binary_input("a", [3], "INT32", 12), _binary_input("b", [2], "FP64", 16))
    req = decode_infer_request(header + a.tobytes() + b.tobytes(), header_length=len(header))
    np.testing.assert_array_equal(req.tensors()["a"], a)
    np.testing.assert_array_equal(req.tensors()["b"], b)


def test_binary_input_without_the_header_length_says_so() -> None:
    header = _header(_binary_input("x", [1], "FP32", 4))
    with pytest.raises(InvalidData, match="no Inference-Header-Content-Length"):
        decode_infer_request(header)


def test_bytes_length_prefix_running_past_the_end_is_refused() -> None:
    header = _header(_binary_input("s", [1], "BYTES", 8))
    raw = (1000).to_bytes(4, "little") + b"abcd"
    with pytest.raises(InvalidData, match="length must fit the data left"):
        decode_infer_request(header + raw, header_length=len(header))


def test_bytes_data_with_fewer_elements_than_the_shape_is_refused() -> None:
    header = _header(_binary_input("s", [2], "BYTES", 5))
    raw = (1).to_bytes(4, "little") + b"a"
    with pytest.raises(InvalidData, match=r"hold 2 length-prefixed elements\. Got 1"):
        decode_infer_request(header + raw, header_length=len(header))


def test_bytes_element_over_the_limit_is_refused_before_copying() -> None:
    header = _header(_binary_input("s", [1], "BYTES", 4 + 100))
    raw = (100).to_bytes(4, "little") + b"x" * 100
    with pytest.raises(PayloadTooLarge, match=r"at most 10 bytes\. Got 100"):
        decode_infer_request(
            header + raw, header_length=len(header), limits=DecodeLimits(max_bytes_element_bytes=10)
        )


def test_bool_bytes_other_than_zero_and_one_are_refused() -> None:
    header = _header(_binary_input("b", [2], "BOOL", 2))
    with pytest.raises(InvalidData, match="0 or 1"):
        decode_infer_request(header + b"\x01\x07", header_length=len(header))


def test_nan_policy_applies_to_binary_floats() -> None:
    header = _header(_binary_input("x", [1], "FP32", 4))
    body = header + np.array([np.nan], dtype=np.float32).tobytes()
    assert np.isnan(decode_infer_request(body, header_length=len(header)).tensors()["x"][0])
    with pytest.raises(InvalidInputError, match="finite"):
        decode_infer_request(body, header_length=len(header), limits=DecodeLimits(allow_nan=False))
