"""The V2 and TF Serving codecs: round trips, the binary extension, and every limit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.errors import InvalidData, InvalidInputError, PayloadTooLarge, SignatureMismatch
from shipyard.server.codec import (
    DecodeLimits,
    decode_infer_request,
    decode_tfs_predict,
    encode_infer_response,
    encode_tfs_predict,
    loads_tolerant,
)
from shipyard.spec import DType, Signature, TensorSpec

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


def test_binary_request_matches_tritonclient_encoding() -> None:
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("y", binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outputs=[out])
    req = decode_infer_request(body, header_length=json_size)
    np.testing.assert_array_equal(req.tensors()["x"], x)
    payload, headers = encode_infer_response(req, {"y": x * 2}, model_name="m", model_version="3")
    n = dict(headers).get(b"inference-header-content-length")
    result = httpclient.InferenceServerClient.parse_response_body(
        payload, header_length=int(n) if n else None
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


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


SIG2 = Signature(
    inputs=(
        TensorSpec(name="tag", dtype=DType.BYTES, shape=(None,)),
        TensorSpec(name="signal", dtype=DType.FP32, shape=(None, 5)),
    ),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None,)),),
)


def test_tfs_row_form_with_named_inputs() -> None:
    body = json.dumps(
        {
            "signature_name": "serving_default",
            "instances": [
                {"tag": "foo", "signal": [1, 2, 3, 4, 5]},
                {"tag": "bar", "signal": [3, 4, 1, 2, 5]},
            ],
        }
    ).encode()
    tensors, form = decode_tfs_predict(body, SIG2)
    assert form == "row"
    assert list(tensors["tag"]) == [b"foo", b"bar"]
    assert tensors["signal"].shape == (2, 5)


def test_tfs_columnar_form_and_b64() -> None:
    body = json.dumps(
        {"inputs": {"tag": [{"b64": "Zm9v"}, "bar"], "signal": [[1] * 5, [2] * 5]}}
    ).encode()
    tensors, form = decode_tfs_predict(body, SIG2)
    assert form == "columnar"
    assert list(tensors["tag"]) == [b"foo", b"bar"]


def test_tfs_nan_tokens_fall_back_to_the_tolerant_parser() -> None:
    assert np.isnan(loads_tolerant(b'{"a": NaN}')["a"])
    with pytest.raises(InvalidData):
        loads_tolerant(b"{nope")


def test_tfs_body_needs_exactly_one_form() -> None:
    with pytest.raises(InvalidData, match="exactly one"):
        decode_tfs_predict(b'{"instances": [], "inputs": {}}', SIG2)


def test_tfs_encoding_of_rows_and_columns() -> None:
    outs = {
        "label": np.array([1, 2], dtype=np.int64),
        "p": np.array([[0.5, 0.5], [0.1, 0.9]], dtype=np.float32),
    }
    rows = json.loads(encode_tfs_predict(outs, "row"))["predictions"]
    assert rows[1]["label"] == 2
    cols = json.loads(encode_tfs_predict(outs, "columnar"))["outputs"]
    assert cols["label"] == [1, 2]
    one = json.loads(encode_tfs_predict({"y": np.array([1.5])}, "row"))
    assert one == {"predictions": [1.5]}
