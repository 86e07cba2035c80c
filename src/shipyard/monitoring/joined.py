"""Quality of logged predictions that have labels, by the same metric code as evaluation.

Imports: metrics, spec (and numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.metrics import classification_metrics, regression_metrics, roc_auc_binary

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.monitoring.feedback import LabelledRow
    from shipyard.spec import TaskSchema

__all__ = ["quality_for_task", "quality_of", "task_events", "version_status"]


def quality_for_task(task: TaskSchema, rows: Sequence[LabelledRow]) -> dict[str, Any]:
    """:func:`quality_of`, reading the outputs as the version's task schema says."""
    return quality_of(
        rows,
        task=task.task.value,
        label_output=task.label_output,
        scores_output=task.scores_output,
        class_labels=task.class_labels,
    )


def _scalar(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def version_status(
    task: TaskSchema,
    counts: dict[str, int],
    rows: Sequence[LabelledRow],
    offline: dict[str, Any],
    window: int,
    *,
    drift: dict[str, Any] | None = None,
    estimated: dict[str, Any] | None = None,
    windows: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One version's monitoring status, as the endpoint and ``monitor status`` both answer.

    Rows logged and labelled, live quality over every labelled row and over the last
    ``window``, beside the version's offline metrics; ``drift`` and ``estimated``
    (:mod:`shipyard.monitoring.watch`) are added under those keys when given.
    ``windows`` (a :meth:`LiveQuality.snapshot`'s, by time and by count) go in ``live``
    beside ``all``; ``last_<window>`` wins a clash of names (the same rows).
    """
    status: dict[str, Any] = {
        "logged": counts.get("predictions", 0),
        "labelled": counts.get("labels", 0),
        "live": {
            "all": quality_for_task(task, rows),
            **(windows or {}),
            f"last_{window}": quality_for_task(task, rows[-window:]),
        },
        "offline": offline,
    }
    if drift is not None:
        status["drift"] = drift
    if estimated is not None:
        status["estimated"] = estimated
    return status


def quality_of(
    rows: Sequence[LabelledRow],
    *,
    task: str,
    label_output: str | None = None,
    scores_output: str | None = None,
    class_labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics of ``rows`` (predictions with labels): classification or regression.

    Classification reads the predicted label from ``label_output`` (or the arg-max of
    ``scores_output`` mapped through ``class_labels``); binary classifiers with scores also
    get ROC AUC (None while only one class has been seen). Regression reads the value from
    ``scores_output`` (or the only output). Returns ``{"n": 0}`` when there is nothing yet.
    """
    if not rows:
        return {"n": 0}
    if task == "classification":
        return _classification(rows, label_output, scores_output, class_labels)
    if task == "regression":
        name = scores_output or next(iter(rows[0].outputs))
        y_pred = np.asarray([float(_scalar(r.outputs[name])) for r in rows])
        y_true = np.asarray([float(_scalar(r.label)) for r in rows])
        return {"n": len(rows), **regression_metrics(y_true, y_pred)}
    return {"n": len(rows)}


def task_events(
    task: TaskSchema, rows: Sequence[LabelledRow]
) -> tuple[list[Any], list[Any], list[float] | None, Any]:
    """Predicted and true values of labelled rows, read as :func:`quality_of` reads them.

    Returns ``(y_pred, y_true, scores, pos_label)``: ``scores`` is the positive-class score
    of a binary classifier with scores (else None), ``pos_label`` its class; what
    :class:`shipyard.monitoring.quality.LiveQuality` takes.
    """
    if not rows:
        return [], [], None, None
    if task.task.value == "regression":
        name = task.scores_output or next(iter(rows[0].outputs))
        y_pred = [float(_scalar(r.outputs[name])) for r in rows]
        return y_pred, [float(_scalar(r.label)) for r in rows], None, None
    y_pred, y_true, scores = _class_pairs(
        rows, task.label_output, task.scores_output, task.class_labels
    )
    positive = task.class_labels[1] if task.class_labels else 1
    numeric = all(isinstance(v, (int, float)) for v in y_pred)
    pos_label = _number(positive) if numeric else str(positive)
    binary = None if scores is None or scores.shape[1] != 2 else scores[:, 1].tolist()
    return y_pred, y_true, binary, pos_label


def _classification(
    rows: Sequence[LabelledRow],
    label_output: str | None,
    scores_output: str | None,
    class_labels: Sequence[Any] | None,
) -> dict[str, Any]:
    y_pred, y_true, scores = _class_pairs(rows, label_output, scores_output, class_labels)
    out: dict[str, Any] = {"n": len(rows), **classification_metrics(y_true, y_pred)}
    if scores is not None and scores.shape[1] == 2:
        positive = class_labels[1] if class_labels else 1
        truth = np.asarray([str(v) == str(positive) for v in y_true], dtype=np.int64)
        out["roc_auc"] = (
            roc_auc_binary(truth, scores[:, 1]) if 0 < truth.sum() < len(truth) else None
        )
    return out


def _class_pairs(
    rows: Sequence[LabelledRow],
    label_output: str | None,
    scores_output: str | None,
    class_labels: Sequence[Any] | None,
) -> tuple[list[Any], list[Any], npt.NDArray[np.float64] | None]:
    scores = None
    if scores_output is not None and scores_output in rows[0].outputs:
        scores = np.asarray([r.outputs[scores_output] for r in rows], dtype=np.float64)
        scores = scores.reshape(len(rows), -1)
    if label_output is not None and label_output in rows[0].outputs:
        y_pred = [_scalar(r.outputs[label_output]) for r in rows]
    elif scores is not None:
        idx = scores.argmax(axis=1)
        y_pred = [class_labels[i] if class_labels else int(i) for i in idx]
    else:
        y_pred = [_scalar(next(iter(r.outputs.values()))) for r in rows]
    y_true = [_scalar(r.label) for r in rows]
    # labels arrive as JSON: compare as the predictions' type when they are numbers
    if all(isinstance(v, (int, float)) for v in y_pred):
        y_true = [v if isinstance(v, (int, float)) else _number(v) for v in y_true]
    else:
        y_true, y_pred = [str(v) for v in y_true], [str(v) for v in y_pred]
    return y_pred, y_true, scores


def _number(value: Any) -> Any:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return int(f) if f.is_integer() else f
