"""The V2 and TF Serving codecs: round trips, the binary extension, and every limit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.errors import InvalidData, InvalidInputError, PayloadTooLarge, SignatureMismatch
from shipyard.server.codec import (
    DecodeLimits,
    decode_infer_request,
    encode_infer_response,
)
from shipyard.spec import DType

NUMERIC = [d for d in DType if d is not DType.BYTES]


def _body(inputs: list[dict], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: d.value)
def test_json_round_trip_for_every_numeric_datatype(dtype: DType) -> None:
    arr = (np.arange(6) % 2).astype(dtype.to_numpy()).reshape(2, 3)
    req = decode_infer_request(
        _body([{"name": "x", "shape": [2, 3], "datatype": dtype.value, "data": arr.tolist()}])
    )
    got = req.tensors()["x"]
    assert got.dtype == dtype.to_numpy()
    np.testing.assert_array_equal(got, arr)
    body, _ = encode_infer_response(req, {"y": got}, model_name="m", model_version="1")
    out = json.loads(body)["outputs"][0]
    assert out["datatype"] == dtype.value
    assert out["shape"] == [2, 3]
    np.testing.assert_array_equal(np.asarray(out["data"]).reshape(2, 3), arr.astype(float))


def test_bytes_round_trip_in_json_and_binary() -> None:
    req = decode_infer_request(
        _body(
            [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", "x"]}],
            outputs=[{"name": "s", "parameters": {"binary_data": True}}],
        )
    )
    assert list(req.tensors()["s"]) == ["héllo".encode(), b"x"]
    body, headers = encode_infer_response(req, req.tensors(), model_name="m", model_version="1")
    hdr = dict(headers)
    n = int(hdr[b"inference-header-content-length"])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 4 + 6 + 4 + 1
    assert body[n:] == b"\x06\x00\x00\x00h\xc3\xa9llo\x01\x00\x00\x00x"


@pytest.mark.parametrize(
    ("declared", "actual"), [(20, 16), (16, 12), (8, 16)], ids=["longer", "body-short", "short"]
)
def test_binary_sizes_that_lie_are_refused(declared: int, actual: int) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    with pytest.raises(InvalidInputError):
        decode_infer_request(header + b"\0" * actual, header_length=len(header))


def test_header_length_outside_the_body_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length"):
        decode_infer_request(b"{}", header_length=10)


def test_bytes_length_prefix_running_past_the_end_is_refused() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    raw = (1000).to_bytes(4, "little") + b"abcd"
    with pytest.raises(InvalidInputError, match="length"):
        decode_infer_request(header + raw, header_length=len(header))


@pytest.mark.parametrize(
    ("inputs", "error", "text"),
    [
        (
            [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}],
            SignatureMismatch,
            "4 elements",
        ),
        (
            [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}],
            InvalidInputError,
            "datatype",
        ),
        (
            [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": []}],
            InvalidInputError,
            "non-negative",
        ),
        ([{"name": "x", "shape": "4", "datatype": "FP32", "data": []}], InvalidInputError, "shape"),
        (
            [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}],
            InvalidInputError,
            "FP32",
        ),
        ([{"name": "x", "shape": [1], "datatype": "FP32"}], InvalidData, "data"),
        ([{"shape": [1], "datatype": "FP32", "data": [1]}], InvalidData, "name"),
        ([], InvalidData, "inputs"),
    ],
)
def test_malformed_inputs_get_clear_errors(inputs: list, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        decode_infer_request(_body(inputs))


@pytest.mark.parametrize(("dtype", "value"), [("FP32", 1e39), ("FP16", -70000)])
def test_numbers_past_the_dtype_range_are_inf_and_the_nan_policy_decides(
    dtype: str, value: float
) -> None:
    body = _body([{"name": "x", "shape": [2], "datatype": dtype, "data": [1, value]}])
    (x,) = decode_infer_request(body).inputs
    assert np.isinf(x.data[1]) and np.sign(x.data[1]) == np.sign(value)
    with pytest.raises(InvalidInputError, match="NaN"):
        decode_infer_request(body, limits=DecodeLimits(allow_nan=False))


def test_not_json_is_invalid_data() -> None:
    with pytest.raises(InvalidData, match="valid JSON"):
        decode_infer_request(b"{nope")
    with pytest.raises(InvalidData, match="object"):
        decode_infer_request(b"[1, 2]")


def test_element_count_is_checked_before_allocation() -> None:
    limits = DecodeLimits(max_elements=100)
    with pytest.raises(PayloadTooLarge, match="at most 100"):
        decode_infer_request(
            _body([{"name": "x", "shape": [100000, 100000], "datatype": "FP32", "data": [1]}]),
            limits=limits,
        )


def test_deep_parameters_are_refused() -> None:
    deep: dict = {}
    cur = deep
    for _ in range(40):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(InvalidInputError, match="nesting"):
        decode_infer_request(
            _body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], parameters=deep),
            limits=DecodeLimits(max_json_depth=32),
        )


def test_nan_policy_applies_to_binary_floats() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    ).encode()
    body = header + np.array([np.nan], dtype=np.float32).tobytes()
    assert np.isnan(decode_infer_request(body, header_length=len(header)).tensors()["x"][0])
    with pytest.raises(InvalidInputError, match="finite"):
        decode_infer_request(body, header_length=len(header), limits=DecodeLimits(allow_nan=False))


def test_huge_bytes_element_is_refused() -> None:
    body = _body([{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x" * 100]}])
    with pytest.raises(PayloadTooLarge, match="BYTES"):
        decode_infer_request(body, limits=DecodeLimits(max_bytes_element_bytes=10))


def test_unknown_requested_output_is_refused() -> None:
    req = decode_infer_request(
        _body(
            [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            outputs=[{"name": "nope"}],
        )
    )
    with pytest.raises(SignatureMismatch, match="nope"):
        encode_infer_response(req, {"y": np.ones(1)}, model_name="m", model_version="1")


def test_timeout_parameter_and_header_set_a_deadline() -> None:
    req = decode_infer_request(
        _body(
            [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            parameters={"timeout": 5_000_000},
        )
    )
    import time

    d = req.deadline(None)
    assert d is not None and 4 < d - time.monotonic() <= 5
    d2 = req.deadline(100.0)
    assert d2 is not None and d2 - time.monotonic() <= 0.1


def test_nested_and_flat_data_decode_to_the_same_tensor() -> None:
    nested = decode_infer_request(
        _body([{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}])
    )
    flat = decode_infer_request(
        _body([{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}])
    )
    np.testing.assert_array_equal(nested.tensors()["x"], flat.tensors()["x"])
    assert nested.inputs[0].shape == (2, 2)
    assert nested.inputs[0].datatype is DType.INT32


def test_unknown_datatype_error_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidData) as info:
        decode_infer_request(_body([{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]))
    for d in DType:
        assert d.value in info.value.message
    assert "Got 'FLOAT' instead." in info.value.message


def test_top_level_count_mismatch_is_refused_before_numpy_sees_the_data() -> None:
    with pytest.raises(SignatureMismatch, match="Got 3 at the top level"):
        decode_infer_request(
            _body([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}])
        )


def test_tensor_data_nested_deeper_than_the_limit_is_refused() -> None:
    data: list = [1.0]
    for _ in range(9):
        data = [data]
    body = _body([{"name": "x", "shape": [1], "datatype": "FP32", "data": data}])
    with pytest.raises(InvalidData, match="nesting must be at most 8"):
        decode_infer_request(body, limits=DecodeLimits(max_json_depth=8))


def test_json_past_orjsons_own_recursion_limit_is_invalid_data() -> None:
    with pytest.raises(InvalidData, match="valid JSON"):
        decode_infer_request(b"[" * 2000 + b"]" * 2000)


def test_deep_output_parameters_are_refused() -> None:
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(InvalidData, match="nesting"):
        decode_infer_request(
            _body(
                [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "y", "parameters": {"x": deep}}],
            )
        )


def test_duplicate_input_names_are_refused() -> None:
    one = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    with pytest.raises(InvalidData, match="'x' twice"):
        decode_infer_request(_body([one, one]))


def test_bytes_output_that_is_not_utf8_is_sent_binary_in_a_json_response() -> None:
    req = decode_infer_request(
        _body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}])
    )
    out = np.array([b"\xff\xfe", b"ok"], dtype=object)
    body, headers = encode_infer_response(req, {"s": out}, model_name="m", model_version="1")
    n = int(dict(headers)[b"inference-header-content-length"])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 4 + 2 + 4 + 2
    text, _ = encode_infer_response(
        req, {"s": np.array([b"ok"], dtype=object)}, model_name="m", model_version="1"
    )
    assert json.loads(text)["outputs"][0]["data"] == ["ok"]


def test_response_echoes_id_and_model_and_writes_flat_data() -> None:
    req = decode_infer_request(
        _body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], id="req-42")
    )
    body, headers = encode_infer_response(
        req, {"y": np.arange(6, dtype=np.int64).reshape(2, 3).T}, model_name="m", model_version="2"
    )
    doc = json.loads(body)
    assert dict(headers)[b"content-type"] == b"application/json"
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "2", "req-42")
    assert doc["outputs"][0]["shape"] == [3, 2]
    assert doc["outputs"][0]["data"] == [0, 3, 1, 4, 2, 5]  # row-major of the transposed view


def test_fp16_travels_as_json_numbers() -> None:
    req = decode_infer_request(
        _body([{"name": "h", "shape": [2], "datatype": "FP16", "data": [0.5, -2.0]}])
    )
    arr = req.tensors()["h"]
    assert arr.dtype == np.float16
    body, _ = encode_infer_response(req, {"h": arr}, model_name="m", model_version="1")
    assert json.loads(body)["outputs"][0]["data"] == [0.5, -2.0]


def test_wrong_element_types_are_invalid_data_without_echoing_the_payload() -> None:
    secret = "s3cr3t-" * 20
    with pytest.raises(InvalidData) as info:
        decode_infer_request(
            _body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [{"k": secret}]}])
        )
    assert secret not in info.value.message
