from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.errors import InvalidData
from shipyard.metrics import classification_metrics
from shipyard.monitoring.estimate import (
    estimate_performance,
    expected_calibration_error,
    realized_performance,
)


def sample(rng: np.random.Generator, n: int, mean: np.ndarray, w: np.ndarray, b: np.ndarray):
    """x ~ N(mean, I); the true P(y | x) is softmax(x @ w + b), the same in every window."""
    x = rng.normal(size=(n, len(mean))) + mean
    logits = x @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.uniform(size=(n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return x, y


@pytest.mark.parametrize("k", [2, 3])
def test_cbpe_tracks_accuracy_under_covariate_shift(k: int) -> None:
    rng = np.random.default_rng(k)
    w = rng.normal(size=(2, k)) * 1.5
    b = rng.normal(size=k) * 0.5
    x_ref, y_ref = sample(rng, 20_000, np.zeros(2), w, b)
    model = LogisticRegression().fit(x_ref, y_ref)
    assert expected_calibration_error(model.predict_proba(x_ref), y_ref) < 0.02
    accuracies = []
    for shift in ([0.0, 0.0], [1.5, -1.0], [-1.0, 2.0]):
        x, y = sample(rng, 20_000, np.array(shift), w, b)
        proba = model.predict_proba(x)
        est = estimate_performance(proba)
        realized = classification_metrics(y, np.argmax(proba, axis=1), labels=list(range(k)))
        assert abs(est.accuracy - realized["accuracy"]) <= 0.03
        assert abs(est.f1_macro - realized["f1_macro"]) <= 0.05
        accuracies.append(realized["accuracy"])
    # the shifts matter: a constant guess of the reference accuracy would be off
    assert max(accuracies) - min(accuracies) > 0.03


def test_uncalibrated_model_is_detected_and_estimate_is_biased() -> None:
    rng = np.random.default_rng(7)
    w, b = np.array([[0.0, 1.0], [0.0, 0.5]]), np.zeros(2)
    x, y = sample(rng, 20_000, np.zeros(2), w, b)
    proba = LogisticRegression().fit(x, y).predict_proba(x)
    sharp = proba**6 / (proba**6).sum(axis=1, keepdims=True)  # overconfident
    assert expected_calibration_error(sharp, y) > 0.05
    realized = float(np.mean(np.argmax(sharp, axis=1) == y))
    assert estimate_performance(sharp).accuracy - realized > 0.05


def test_expected_confusion_matrix_by_hand() -> None:
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    est = estimate_performance(proba, labels=["no", "yes"])
    np.testing.assert_allclose(est.confusion_matrix, [[0.9, 0.6], [0.1, 1.4]])
    assert est.accuracy == pytest.approx((0.9 + 1.4) / 3)
    assert est.per_class["yes"]["precision"] == pytest.approx(1.4 / 2)
    assert est.per_class["yes"]["recall"] == pytest.approx(1.4 / 1.5)
    assert est.per_class["no"]["f1"] == pytest.approx(2 * 0.9 / (1.5 + 1))
    positive_only = estimate_performance(proba[:, 1])
    assert positive_only.accuracy == pytest.approx(est.accuracy)


def test_realized_beside_estimated() -> None:
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    out = realized_performance(proba, ["a", "b", "a", "a"], labels=["a", "b"])
    assert out["realized"]["accuracy"] == 0.75
    assert out["estimated"]["accuracy"] == pytest.approx((0.9 + 0.6 + 0.8 + 0.7) / 4)
    assert out["difference"]["accuracy"] == pytest.approx(0.75 - 0.75)


@pytest.mark.parametrize(
    ("proba", "match"),
    [
        (np.zeros((0, 2)), "shape"),
        (np.zeros((3, 1)), "shape"),
        (np.array([[0.5, 0.6]]), "sum to 1"),
        (np.array([[1.5, -0.5]]), "within"),
        (np.array([[np.nan, 1.0]]), "finite"),
    ],
)
def test_invalid_probabilities(proba: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidData, match=match):
        estimate_performance(proba)


def test_other_input_errors() -> None:
    with pytest.raises(InvalidData, match="labels"):
        estimate_performance([[0.5, 0.5]], labels=["a"])
    with pytest.raises(InvalidData, match="one label per row"):
        expected_calibration_error([[0.5, 0.5]], [0, 1])
