"""Classification quality metrics in plain numpy: accuracy, precision, recall, F1, ROC AUC.

Results agree with ``sklearn.metrics`` (``zero_division`` behaves like scikit-learn's
default, 0.0, but without a warning). Labels may be ints, strings or any sortable scalars.

Imports: numpy, shipyard.errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidInputError
from shipyard.metrics._validation import as_1d, check_same_length, common_kind

__all__ = ["classification_metrics", "roc_auc_binary"]


def _safe_div(num: npt.NDArray[np.float64], den: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def classification_metrics(
    y_true: Sequence[Any] | npt.NDArray[Any],
    y_pred: Sequence[Any] | npt.NDArray[Any],
    labels: Sequence[Any] | npt.NDArray[Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro, weighted and per class) and the confusion matrix.

    Args:
        y_true: True labels, shape (N,).
        y_pred: Predicted labels, shape (N,).
        labels: The classes to report, in order; default: the sorted union of both arrays.
            Samples whose true or predicted label is not listed are left out of the
            confusion matrix and of the per-class counts, as in scikit-learn; accuracy
            always uses every sample.

    Returns:
        A dict with ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``,
        ``precision_weighted``, ``recall_weighted``, ``f1_weighted`` (floats),
        ``labels`` (list), ``support`` (list of int, per label), ``confusion_matrix``
        (list of lists; rows are true labels, columns predicted, in ``labels`` order) and
        ``per_class`` (``str(label)`` → precision, recall, f1, support). A score whose
        denominator is zero is 0.0.

    Raises:
        InvalidInputError: the arrays differ in length, are not 1-D, or are empty.

    Example:
        >>> classification_metrics([0, 1, 1], [0, 1, 0])["accuracy"]  # doctest: +ELLIPSIS
        0.666...
    """
    yt = as_1d(y_true, "y_true")
    yp = as_1d(y_pred, "y_pred")
    check_same_length(yt, yp)
    if len(yt) == 0:
        raise InvalidInputError("y_true must hold at least one sample. Got 0 instead.")
    if labels is None:
        yt, yp = common_kind(yt, yp)
        # one encoding of both arrays, so equality is a comparison of small ints
        label_arr, codes = np.unique(np.concatenate([yt, yp]), return_inverse=True)
        codes = codes.reshape(-1)
        ti, pi = codes[: len(yt)], codes[len(yt) :]
        correct = ti == pi
    else:
        label_arr = np.asarray(labels).reshape(-1)
        if len(label_arr) == 0:
            raise InvalidInputError("labels must list at least one class. Got none instead.")
        yt, yp, label_arr = common_kind(yt, yp, label_arr)
        every, codes = np.unique(np.concatenate([yt, yp]), return_inverse=True)
        codes = codes.reshape(-1)
        correct = codes[: len(yt)] == codes[len(yt) :]
        pos = np.searchsorted(every, label_arr)
        pos_c = np.minimum(pos, len(every) - 1)
        present = every[pos_c] == label_arr
        lut = np.full(len(every), -1, dtype=np.int64)
        lut[pos_c[present]] = np.flatnonzero(present)
        ti, pi = lut[codes[: len(yt)]], lut[codes[len(yt) :]]
    n = len(label_arr)
    t_ok, p_ok = ti >= 0, pi >= 0
    both = t_ok & p_ok
    cm = np.bincount(ti[both] * n + pi[both], minlength=n * n).reshape(n, n)
    true_sum = np.bincount(ti[t_ok], minlength=n).astype(np.float64)
    pred_sum = np.bincount(pi[p_ok], minlength=n).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)

    precision = _safe_div(tp, pred_sum)
    recall = _safe_div(tp, true_sum)
    f1 = _safe_div(2.0 * tp, true_sum + pred_sum)
    total = true_sum.sum()

    def weighted(values: npt.NDArray[np.float64]) -> float:
        return float(np.dot(values, true_sum) / total) if total > 0 else 0.0

    label_list = [_py(lab) for lab in label_arr]
    support = true_sum.astype(np.int64)
    return {
        "accuracy": float(np.mean(correct)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": weighted(precision),
        "recall_weighted": weighted(recall),
        "f1_weighted": weighted(f1),
        "labels": label_list,
        "support": support.tolist(),
        "confusion_matrix": cm.tolist(),
        "per_class": {
            str(lab): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for lab, p, r, f, s in zip(label_list, precision, recall, f1, support, strict=True)
        },
    }


def roc_auc_binary(
    y_true: Sequence[Any] | npt.NDArray[Any],
    scores: Sequence[float] | npt.NDArray[Any],
    pos_label: Any = 1,
) -> float:
    """Area under the ROC curve of a binary classifier (ties count one half).

    Args:
        y_true: True labels, shape (N,); ``pos_label`` marks the positive class, every
            other value is negative.
        scores: Higher means more likely positive, shape (N,).
        pos_label: The positive class.

    Returns:
        The AUC, equal to ``sklearn.metrics.roc_auc_score``.

    Raises:
        InvalidInputError: lengths differ, or ``y_true`` holds only one class.
    """
    yt = as_1d(y_true, "y_true")
    s = as_1d(scores, "scores").astype(np.float64)
    if len(yt) != len(s):
        raise InvalidInputError(
            f"y_true and scores must have the same length. Got {len(yt)} and {len(s)} instead."
        )
    pos_arr = np.asarray([pos_label])
    yt, pos_arr = common_kind(yt, pos_arr)
    positive = yt == pos_arr[0]
    n_pos = int(positive.sum())
    n_neg = len(yt) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            "ROC AUC needs both classes in y_true. "
            f"Got {n_pos} positive and {n_neg} negative samples instead."
        )
    # Mann-Whitney U with average ranks for ties
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0
    ranks = avg_rank[inverse.reshape(-1)]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
