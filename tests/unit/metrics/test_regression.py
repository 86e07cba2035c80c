from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from shipyard.errors import InvalidInputError
from shipyard.metrics import regression_metrics

TOL = 1e-9


@pytest.mark.parametrize("offset", range(4))
def test_regression_metrics_match_sklearn(seed: int, offset: int) -> None:
    rng = np.random.default_rng(seed + offset)
    y = rng.normal(size=300) * 10
    pred = y + rng.normal(size=300)
    got = regression_metrics(y, pred)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=TOL)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), abs=TOL)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=TOL)


def test_multi_output_regression_averages_outputs_like_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(100, 3))
    pred = y + rng.normal(size=(100, 3)) * [0.1, 1.0, 3.0]
    got = regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=TOL)


def test_a_column_prediction_matches_a_flat_target() -> None:
    got = regression_metrics([1.0, 2.0, 3.0], np.array([[1.0], [2.0], [4.0]]))
    assert got["mae"] == pytest.approx(1 / 3)


def test_constant_target_gives_finite_r2_like_sklearn() -> None:
    assert regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"] == 1.0
    assert regression_metrics([2.0, 2.0], [2.0, 3.0])["r2"] == skm.r2_score([2.0, 2.0], [2.0, 3.0])


def test_mismatched_lengths_are_refused_with_both_lengths() -> None:
    with pytest.raises(InvalidInputError) as info:
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert str(info.value) == ("y_true and y_pred must have the same length. Got 3 and 4 instead.")


def test_non_numeric_values_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="numeric"):
        regression_metrics(["a"], [1.0])
