"""Shared input checks for the metric functions (lengths, shapes, label encoding)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidInputError

_TEXT_KINDS = frozenset("USO")


def as_1d(values: Any, name: str) -> npt.NDArray[Any]:
    """``values`` as a 1-D array; an (N, 1) column is flattened."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D. Got shape {arr.shape} instead.")
    return arr


def check_same_length(y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any]) -> None:
    """Raise InvalidInputError unless both arrays have the same number of rows."""
    if len(y_true) != len(y_pred):
        raise InvalidInputError(
            "y_true and y_pred must have the same length. "
            f"Got {len(y_true)} and {len(y_pred)} instead."
        )


def common_kind(*arrays: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], ...]:
    """Make label arrays comparable: if any holds text, all become ``str``."""
    if any(a.dtype.kind in _TEXT_KINDS for a in arrays) and not all(
        a.dtype.kind in _TEXT_KINDS for a in arrays
    ):
        return tuple(a.astype(str) for a in arrays)
    if any(a.dtype.kind == "O" for a in arrays):
        return tuple(a.astype(str) if a.dtype.kind == "O" else a for a in arrays)
    return arrays
