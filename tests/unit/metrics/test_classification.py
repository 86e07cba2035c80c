from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from shipyard.errors import InvalidInputError
from shipyard.metrics import classification_metrics, roc_auc_binary

TOL = 1e-9


def _assert_matches_sklearn(y_true, y_pred, labels=None) -> dict:
    got = classification_metrics(y_true, y_pred, labels=labels)
    lab = got["labels"] if labels is None else list(labels)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=TOL)
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=lab, average=avg, zero_division=0.0
        )
        assert got[f"precision_{avg}"] == pytest.approx(p, abs=TOL)
        assert got[f"recall_{avg}"] == pytest.approx(r, abs=TOL)
        assert got[f"f1_{avg}"] == pytest.approx(f, abs=TOL)
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=lab, average=None, zero_division=0.0
    )
    for i, label in enumerate(lab):
        per = got["per_class"][str(label)]
        assert per["precision"] == pytest.approx(p[i], abs=TOL)
        assert per["recall"] == pytest.approx(r[i], abs=TOL)
        assert per["f1"] == pytest.approx(f[i], abs=TOL)
        assert per["support"] == s[i]
    assert got["support"] == list(s)
    np.testing.assert_array_equal(
        np.array(got["confusion_matrix"]), skm.confusion_matrix(y_true, y_pred, labels=lab)
    )
    return got


@pytest.mark.parametrize("offset", range(4))
@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_classification_metrics_match_sklearn_on_random_labels(
    seed: int, offset: int, n_classes: int
) -> None:
    rng = np.random.default_rng(seed + offset)
    y_true = rng.integers(0, n_classes, size=500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, n_classes, size=500))
    _assert_matches_sklearn(y_true, y_pred)


def test_classification_metrics_work_with_string_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = np.array(["setosa", "versicolor", "virginica"])
    y_true = names[rng.integers(0, 3, size=300)]
    y_pred = names[rng.integers(0, 3, size=300)]
    got = _assert_matches_sklearn(y_true.tolist(), y_pred.astype(object))
    assert got["labels"] == ["setosa", "versicolor", "virginica"]


def test_a_class_never_predicted_scores_zero_precision_without_warning(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, size=200)
    y_pred = np.where(y_true == 2, 0, y_true)  # class 2 is never predicted
    got = _assert_matches_sklearn(y_true, y_pred)
    assert got["per_class"]["2"]["precision"] == 0.0


def test_a_class_never_seen_anywhere_scores_zero_everywhere() -> None:
    got = _assert_matches_sklearn([0, 1, 1, 0], [0, 1, 0, 0], labels=[0, 1, 2])
    assert got["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_labels_order_the_confusion_matrix_and_drop_unlisted_samples() -> None:
    y_true = ["b", "a", "c", "a", "b"]
    y_pred = ["b", "a", "a", "c", "a"]
    got = _assert_matches_sklearn(y_true, y_pred, labels=["b", "a"])
    assert got["labels"] == ["b", "a"]
    assert got["confusion_matrix"] == [[1, 1], [0, 1]]


def test_labels_of_another_type_than_the_data_are_compared_as_text() -> None:
    got = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), labels=["0", "1"])
    assert got["confusion_matrix"] == [[1, 0], [1, 1]]


def test_mismatched_lengths_are_refused_with_both_lengths() -> None:
    with pytest.raises(InvalidInputError) as info:
        classification_metrics([1, 2, 3], [1, 2, 3, 4])
    assert str(info.value) == ("y_true and y_pred must have the same length. Got 3 and 4 instead.")


def test_empty_input_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least one sample"):
        classification_metrics([], [])


@pytest.mark.parametrize("offset", range(3))
def test_roc_auc_binary_matches_sklearn_including_ties(seed: int, offset: int) -> None:
    rng = np.random.default_rng(seed + offset)
    y = rng.integers(0, 2, size=400)
    scores = np.round(rng.random(400) * 0.5 + y * 0.3, 2)  # rounding creates ties
    assert roc_auc_binary(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=TOL)


def test_roc_auc_binary_takes_a_string_positive_label() -> None:
    y = np.array(["no", "yes", "yes", "no", "yes"])
    s = np.array([0.1, 0.8, 0.4, 0.5, 0.9])
    expected = skm.roc_auc_score(y == "yes", s)
    assert roc_auc_binary(y, s, pos_label="yes") == pytest.approx(expected, abs=TOL)


def test_roc_auc_binary_needs_both_classes() -> None:
    with pytest.raises(InvalidInputError, match="both classes"):
        roc_auc_binary([1, 1], [0.2, 0.3])
