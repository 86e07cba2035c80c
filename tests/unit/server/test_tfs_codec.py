"""TF Serving REST :predict: row and columnar forms, b64, NaN tokens, and the encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.errors import InferenceError, InvalidData, PayloadTooLarge, SignatureMismatch
from shipyard.server.codec import (
    TFS_UNNAMED,
    DecodeLimits,
    decode_tfs_predict,
    encode_tfs_predict,
    loads_tolerant,
)
from shipyard.spec import DType, Signature, TensorSpec

# the three named inputs of the PROTOCOLS.md example
SIG3 = Signature(
    inputs=(
        TensorSpec(name="tag", dtype=DType.BYTES, shape=(None,)),
        TensorSpec(name="signal", dtype=DType.FP32, shape=(None, 5)),
        TensorSpec(name="sensor", dtype=DType.INT64, shape=(None, 2, 2)),
    ),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None,)),),
)
ONE = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 3)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None,)),),
)


def test_row_form_with_several_named_inputs_from_the_protocol_example() -> None:
    body = json.dumps(
        {
            "signature_name": "serving_default",
            "instances": [
                {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
                {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
            ],
        }
    ).encode()
    tensors, form = decode_tfs_predict(body, SIG3)
    assert form == "row"
    assert list(tensors["tag"]) == [b"foo", b"bar"]
    assert tensors["signal"].dtype == np.float32 and tensors["signal"].shape == (2, 5)
    assert tensors["sensor"].dtype == np.int64 and tensors["sensor"].shape == (2, 2, 2)


def test_columnar_form_from_the_protocol_example() -> None:
    body = json.dumps(
        {
            "inputs": {
                "tag": ["foo", "bar"],
                "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
            }
        }
    ).encode()
    tensors, form = decode_tfs_predict(body, SIG3)
    assert form == "columnar"
    assert tensors["sensor"][1, 1, 1] == 8


def test_unnamed_row_and_columnar_tensors_go_to_the_only_input() -> None:
    rows, form = decode_tfs_predict(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', ONE)
    assert form == "row" and rows["x"].shape == (2, 3) and rows["x"].dtype == np.float32
    cols, form = decode_tfs_predict(b'{"inputs": [[1, 2, 3]]}', ONE)
    assert form == "columnar" and cols["x"].shape == (1, 3)


def test_without_a_signature_dtypes_are_inferred_and_unnamed_input_has_a_fixed_key() -> None:
    tensors, _ = decode_tfs_predict(b'{"instances": [[1.5, 2], [3, 4]]}')
    assert tensors[TFS_UNNAMED].dtype == np.float64
    named, _ = decode_tfs_predict(b'{"inputs": {"s": ["a", {"b64": "Yg=="}], "n": [1, 2]}}')
    assert list(named["s"]) == [b"a", b"b"]
    assert named["n"].dtype == np.int64


def test_b64_values_become_bytes_and_bad_base64_is_invalid_data() -> None:
    body = (
        b'{"instances": [{"tag": {"b64": "Zm9v"}, "signal": [1,1,1,1,1], "sensor": [[1,1],[1,1]]}]}'
    )
    tensors, _ = decode_tfs_predict(body, SIG3)
    assert tensors["tag"][0] == b"foo"
    bad = (
        b'{"inputs": {"tag": [{"b64": "!!"}], "signal": [[1,1,1,1,1]], "sensor": [[[1,1],[1,1]]]}}'
    )
    with pytest.raises(InvalidData, match="valid base64"):
        decode_tfs_predict(bad, SIG3)


def test_nan_and_infinity_tokens_are_accepted_through_the_fallback_parser() -> None:
    tensors, _ = decode_tfs_predict(b'{"instances": [[NaN, Infinity, -Infinity]]}', ONE)
    x = tensors["x"]
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[0, 2] == -np.inf
    assert np.isnan(loads_tolerant(b'{"a": NaN}')["a"])


def test_nan_tokens_are_refused_when_nan_is_not_allowed() -> None:
    with pytest.raises(InvalidData, match="finite"):
        decode_tfs_predict(
            b'{"instances": [[NaN, 1, 2]]}', ONE, limits=DecodeLimits(allow_nan=False)
        )


def test_not_json_even_with_nan_tokens_is_invalid_data() -> None:
    with pytest.raises(InvalidData, match="valid JSON"):
        loads_tolerant(b"{nope")
    with pytest.raises(InvalidData, match="nesting"):
        loads_tolerant(b"[" * 5000 + b"NaN" + b"]" * 5000)


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        (b'{"instances": [], "inputs": {}}', InvalidData, "Got both instead"),
        (b'{"signature_name": "x"}', InvalidData, "Got neither instead"),
        (b'{"instances": []}', InvalidData, "non-empty"),
        (b"[1, 2]", InvalidData, "JSON object"),
        (b'{"instances": [[1, 2, 3], [4, 5]]}', InvalidData, "regular"),
        (b'{"instances": [{"x": [1, 2, 3]}, [1, 2, 3]]}', InvalidData, "Every instance"),
        (b'{"inputs": {"x": [[1, 2, 3]], "z": [1]}}', SignatureMismatch, "Inputs must be"),
        (b'{"inputs": {"x": [[1, 2, {"k": 1}]]}}', InvalidData, "regular"),
    ],
)
def test_malformed_predict_bodies_get_clear_errors(body: bytes, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        decode_tfs_predict(body, ONE)


def test_unnamed_tensor_for_a_model_with_several_inputs_is_a_signature_mismatch() -> None:
    with pytest.raises(SignatureMismatch, match="must be named"):
        decode_tfs_predict(b'{"instances": [1, 2]}', SIG3)


def test_too_many_elements_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 4 elements"):
        decode_tfs_predict(
            b'{"instances": [[1, 2, 3], [4, 5, 6]]}', ONE, limits=DecodeLimits(max_elements=4)
        )


def test_row_encoding_gives_one_entry_per_instance() -> None:
    outs = {
        "label": np.array([1, 2], dtype=np.int64),
        "p": np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32),
    }
    rows = json.loads(encode_tfs_predict(outs, "row"))["predictions"]
    assert rows == [{"label": 1, "p": [0.5, 0.5]}, {"label": 2, "p": [0.25, 0.75]}]
    one = json.loads(encode_tfs_predict({"y": np.array([1.5, 2.5])}, "row"))
    assert one == {"predictions": [1.5, 2.5]}


def test_columnar_encoding_keys_several_outputs_by_name() -> None:
    outs = {"label": np.array([1, 2]), "p": np.array([0.5, 0.25], dtype=np.float16)}
    assert json.loads(encode_tfs_predict(outs, "columnar")) == {
        "outputs": {"label": [1, 2], "p": [0.5, 0.25]}
    }
    assert json.loads(encode_tfs_predict({"y": np.array([3])}, "columnar")) == {"outputs": [3]}


def test_string_outputs_are_text_and_bytes_outputs_are_b64() -> None:
    outs = {
        "word": np.array([b"hi", b"\xff"], dtype=object),
        "raw_bytes": np.array([b"hi"], dtype=object).repeat(2),
    }
    cols = json.loads(encode_tfs_predict(outs, "columnar"))["outputs"]
    assert cols["word"] == ["hi", {"b64": "/w=="}]
    assert cols["raw_bytes"] == [{"b64": "aGk="}, {"b64": "aGk="}]


def test_row_encoding_refuses_outputs_with_different_batch_sizes() -> None:
    with pytest.raises(InferenceError, match="share their first dimension"):
        encode_tfs_predict({"a": np.ones(2), "b": np.ones(3)}, "row")
