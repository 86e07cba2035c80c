"""InputChecker: arrays it returned pass again untouched; anything else is checked."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import SignatureMismatch
from shipyard.runtime import InputChecker
from shipyard.spec import DType, Signature, TensorSpec


def _sig(width: int) -> Signature:
    return Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, width)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 1)),),
    )


def test_checked_arrays_pass_again_as_they_are() -> None:
    sig = _sig(4)
    first = InputChecker(sig).check({"x": np.ones((2, 4), dtype=np.float64)})
    assert first["x"].dtype == np.float32  # cast once
    assert InputChecker(sig).check(first) is first  # same signature: not checked again


def test_arrays_checked_for_another_signature_are_checked_again() -> None:
    checked = InputChecker(_sig(4)).check({"x": np.ones((2, 4), dtype=np.float32)})
    with pytest.raises(SignatureMismatch, match=r"shape \(N, 3\)"):
        InputChecker(_sig(3)).check(checked)


def test_a_plain_dict_is_always_checked() -> None:
    sig = _sig(4)
    with pytest.raises(SignatureMismatch):
        InputChecker(sig).check({"x": np.ones((2, 5), dtype=np.float32)})
