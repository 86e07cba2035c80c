"""Regression quality metrics in plain numpy: MAE, MSE, RMSE and R².

Multi-output targets (N, k) are averaged uniformly over outputs, as scikit-learn does.

Imports: numpy, shipyard.errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidInputError
from shipyard.metrics._validation import check_same_length

__all__ = ["regression_metrics"]


def _as_2d(values: Any, name: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric. It is not: {exc}") from None
    if arr.ndim == 1:
        return arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be 1-D or 2-D. Got shape {arr.shape} instead.")
    return arr


def regression_metrics(
    y_true: Sequence[float] | npt.NDArray[Any], y_pred: Sequence[float] | npt.NDArray[Any]
) -> dict[str, Any]:
    """Mean absolute error, mean squared error, its root, and the coefficient of determination.

    Args:
        y_true: True values, shape (N,) or (N, k).
        y_pred: Predictions, the same shape (an (N, 1) column matches (N,)).

    Returns:
        ``{"mae", "mse", "rmse", "r2"}``. ``r2`` is 1.0 for a perfect fit of a
        constant target and 0.0 for an imperfect one (scikit-learn's ``force_finite``).
        For (N, k) targets each metric is the mean over outputs (``rmse`` of each output,
        then averaged), as in scikit-learn.

    Raises:
        InvalidInputError: lengths or shapes differ, the data are empty or not numeric.

    Example:
        >>> regression_metrics([1.0, 2.0], [1.0, 4.0])["mae"]
        1.0
    """
    yt = _as_2d(y_true, "y_true")
    yp = _as_2d(y_pred, "y_pred")
    check_same_length(yt, yp)
    if yt.shape != yp.shape:
        raise InvalidInputError(
            f"y_pred must have the shape of y_true {yt.shape}. Got {yp.shape} instead."
        )
    if len(yt) == 0:
        raise InvalidInputError("y_true must hold at least one sample. Got 0 instead.")
    err = yt - yp
    mae = np.mean(np.abs(err), axis=0)
    mse = np.mean(err * err, axis=0)
    ss_res = np.sum(err * err, axis=0)
    centered = yt - yt.mean(axis=0)
    ss_tot = np.sum(centered * centered, axis=0)
    r2 = np.where(ss_res == 0, 1.0, 0.0)
    nonconst = ss_tot != 0
    r2[nonconst] = 1.0 - ss_res[nonconst] / ss_tot[nonconst]
    return {
        "mae": float(mae.mean()),
        "mse": float(mse.mean()),
        "rmse": float(np.sqrt(mse).mean()),
        "r2": float(r2.mean()),
    }
