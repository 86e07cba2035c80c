from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import InvalidInputError, InvalidModelRef, InvalidName
from shipyard.spec import DType, Lineage, ModelRef, Signature, TensorSpec, validate_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", ModelRef("iris")),
        ("iris:3", ModelRef("iris", version=3)),
        ("iris@prod", ModelRef("iris", alias="prod")),
        ("a.b_c-1", ModelRef("a.b_c-1")),
    ],
)
def test_model_ref_parses_the_three_forms(text: str, expected: ModelRef) -> None:
    ref = ModelRef.parse(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize("text", ["iris:0", "iris:x", "iris:", "iris:1@prod", ""])
def test_model_ref_rejects_malformed_refs(text: str) -> None:
    with pytest.raises((InvalidModelRef, InvalidName)):
        ModelRef.parse(text)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("Iris", "lower-case"),
        ("a/b", "path separators"),
        ("a\\b", "path separators"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        ("-x", "starting with"),
        ("x" * 65, "at most 64"),
        ("a b", "lower-case"),
    ],
)
def test_validate_name_names_the_broken_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidName, match=None) as info:
        validate_name(name)
    assert rule in info.value.message


def test_validate_name_accepts_64_characters() -> None:
    assert validate_name("a" * 64) == "a" * 64


def test_dtype_maps_numpy_both_ways() -> None:
    for dt in DType:
        if dt is DType.BYTES:
            continue
        assert DType.from_numpy(dt.to_numpy()) is dt
    assert DType.from_numpy(np.dtype("U3")) is DType.BYTES
    with pytest.raises(InvalidInputError, match="complex64"):
        DType.from_numpy(np.complex64)


def test_dtype_from_onnx_element_types() -> None:
    assert DType.from_onnx(1) is DType.FP32
    assert DType.from_onnx(7) is DType.INT64
    assert DType.FP32.onnx_type == "tensor(float)"
    with pytest.raises(InvalidInputError):
        DType.from_onnx(999)


def test_signature_lookup_and_wire_shape() -> None:
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    assert sig.input("x").wire_shape() == [-1, 4]
    assert sig.output("y").shape == (None, 2)
    with pytest.raises(KeyError):
        sig.input("nope")


def test_lineage_describes_itself() -> None:
    assert Lineage().describe() == "source"
    assert Lineage(parent_version=3, transformation="int8").describe() == "int8 of 3"
