"""Label-free performance estimation for classifiers (confidence-based, as NannyML's CBPE).

A calibrated classifier's probability for class k *is* the chance that the true label is
k. So, before any label arrives, the expected confusion matrix of a window is
``E[C[i, j]] = sum over rows predicted j of p_i(x)``, and from it the expected accuracy
(the mean of the top probability), precision, recall and F1, per class and macro.

When the estimate is invalid:
- the model is not calibrated on the current data (check `expected_calibration_error` on
  labelled reference data; recalibrate, e.g. with scikit-learn's CalibratedClassifierCV,
  before trusting estimates);
- concept drift: P(y | x) changed. CBPE follows covariate shift (x moves, P(y | x) stays)
  only; once labels arrive, compare the estimate with `realized_performance`.

Imports: numpy, shipyard.errors, shipyard.metrics (L0-L1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidData
from shipyard.metrics import classification_metrics

__all__ = [
    "PerformanceEstimate",
    "estimate_performance",
    "expected_calibration_error",
    "realized_performance",
]


@dataclass(frozen=True)
class PerformanceEstimate:
    """Expected quality of a window of predictions, from probabilities alone."""

    n: int
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    labels: list[Any]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[float]]
    """Expected counts; rows are true labels, columns predicted, in ``labels`` order."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)


def _probabilities(proba: Any) -> npt.NDArray[np.float64]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)  # a binary model's positive-class probability
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise InvalidData(
            "probabilities must be (N,) positive-class scores or an (N, K) matrix with "
            f"K >= 2 and N >= 1. Got shape {np.asarray(proba).shape} instead."
        )
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise InvalidData("probabilities must be finite and within [0, 1]. Got other values.")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise InvalidData(
            "Each row of probabilities must sum to 1. "
            f"Got sums from {sums.min():.4g} to {sums.max():.4g}.",
            hint="Pass the model's predict_proba output, not logits or scores.",
        )
    normalised: npt.NDArray[np.float64] = p / sums[:, None]
    return normalised


def _labels(labels: Sequence[Any] | None, k: int) -> list[Any]:
    if labels is None:
        return list(range(k))
    out = list(labels)
    if len(out) != k:
        raise InvalidData(f"labels must name each of the {k} classes. Got {len(out)} labels.")
    return out


def estimate_performance(
    probabilities: Any, *, labels: Sequence[Any] | None = None
) -> PerformanceEstimate:
    """Estimate accuracy, precision, recall and F1 without labels (CBPE).

    Args:
        probabilities: (N, K) class probabilities, or (N,) positive-class probabilities of
            a binary model. The prediction is the most probable class (first on ties), as
            ``argmax``; for a binary model that is the 0.5 threshold.
        labels: Class names in column order (default 0 … K-1).

    Raises:
        InvalidData: wrong shape, values outside [0, 1], or rows that do not sum to 1.

    Example:
        >>> estimate_performance([[0.9, 0.1], [0.2, 0.8]]).accuracy  # doctest: +ELLIPSIS
        0.85...
    """
    p = _probabilities(probabilities)
    names = _labels(labels, p.shape[1])
    n, k = p.shape
    pred = np.argmax(p, axis=1)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), pred] = 1.0
    cm = p.T @ onehot  # cm[i, j] = sum of p_i over rows predicted j
    tp = np.diag(cm)
    expected_support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, expected_support, out=np.zeros(k), where=expected_support > 0)
    denom = expected_support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return PerformanceEstimate(
        n=n,
        accuracy=float(tp.sum() / n),
        precision_macro=float(precision.mean()),
        recall_macro=float(recall.mean()),
        f1_macro=float(f1.mean()),
        labels=names,
        per_class={
            str(name): {
                "precision": float(pr),
                "recall": float(rc),
                "f1": float(f),
                "expected_support": float(s),
            }
            for name, pr, rc, f, s in zip(
                names, precision, recall, f1, expected_support, strict=True
            )
        },
        confusion_matrix=cm.tolist(),
    )


def realized_performance(
    probabilities: Any, y_true: Any, *, labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Estimated and measured quality side by side, once labels have arrived.

    Returns:
        ``{"estimated": PerformanceEstimate.to_dict(), "realized": <shipyard.metrics.
        classification_metrics>, "difference": {metric: realized - estimated}}`` for
        accuracy and the macro precision, recall and F1.
    """
    est = estimate_performance(probabilities, labels=labels)
    p = _probabilities(probabilities)
    y_pred = [est.labels[i] for i in np.argmax(p, axis=1)]
    realized = classification_metrics(np.asarray(y_true), np.asarray(y_pred), labels=est.labels)
    keys = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    return {
        "estimated": est.to_dict(),
        "realized": realized,
        "difference": {k: realized[k] - getattr(est, k) for k in keys},
    }


def expected_calibration_error(probabilities: Any, y_true: Any, *, bins: int = 10) -> float:
    """Expected calibration error of the top-class probability (equal-width bins).

    Use it on labelled reference data: a model with a large ECE (say > 0.02) gives biased
    CBPE estimates. ``y_true`` holds column indices 0 … K-1.
    """
    p = _probabilities(probabilities)
    y = np.asarray(y_true).reshape(-1)
    if len(y) != len(p):
        raise InvalidData(f"y_true must have one label per row ({len(p)}). Got {len(y)} instead.")
    conf = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins)
        - np.bincount(which, weights=conf, minlength=bins)
    )
    return float(gap.sum() / count.sum())
