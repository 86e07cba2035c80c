"""evaluate: run a registered version on a labelled dataset and compute its quality metrics.

Imports: registry, runtime, metrics, monitoring, workflows.data, config, spec, errors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidData, InvalidInputError, ShipyardError
from shipyard.metrics import classification_metrics, regression_metrics, roc_auc_binary
from shipyard.monitoring.watch import ReferenceSample, reference_path
from shipyard.runtime.onnx import OnnxRuntime
from shipyard.spec import ModelRef, TaskType
from shipyard.workflows._readout import Readout, align_labels
from shipyard.workflows.data import data_format, iter_batches
from shipyard.workflows.reference import new_sample

if TYPE_CHECKING:
    from shipyard.config import RuntimeSettings
    from shipyard.registry import ModelRegistry, ModelVersion

__all__ = ["EvaluationResult", "evaluate"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4096
MAX_STORED_LABELS = 50
"""Confusion matrices of more classes than this are not stored on the version."""


@dataclass(frozen=True)
class EvaluationResult:
    """The quality of one version on one dataset.

    Attributes:
        ref: The evaluated version, ``name:version``.
        task: ``"classification"`` or ``"regression"``.
        n_rows: Rows evaluated.
        metrics: Classification: ``accuracy``, ``precision_macro``, ``recall_macro``,
            ``f1_macro``, their ``_weighted`` twins, ``roc_auc`` (binary, when the model
            gives scores and both classes occur), ``labels``, ``support``,
            ``confusion_matrix`` and ``per_class``. Regression: ``mae``, ``mse``, ``rmse``,
            ``r2``.
    """

    ref: str
    task: str
    n_rows: int
    metrics: dict[str, Any]

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        """Precision, recall, F1 and support by ``str(label)``; empty for regression."""
        found = self.metrics.get("per_class")
        return dict(found) if isinstance(found, dict) else {}


def _no_target_error(path: Path) -> InvalidInputError:
    return InvalidInputError(
        f"evaluate must know the label column of {str(path)!r}. Got no target instead.",
        hint="Pass --target COLUMN (python: target='COLUMN').",
    )


def evaluate(
    registry: ModelRegistry,
    ref: str | ModelRef,
    data: Path,
    *,
    target: str | None = None,
    runtime_settings: RuntimeSettings | None = None,
    store: bool = True,
    actor: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reference_root: Path | None = None,
) -> EvaluationResult:
    """Run a version on labelled data in batches and compute classification or regression metrics.

    Predictions come from the version's task schema: the ``label_output`` when there is
    one, else the argmax of ``scores_output`` mapped through ``class_labels``; regressors
    use ``scores_output`` (default: the first output). True labels are converted to the
    type of the model's labels (``1``, ``1.0`` and ``"1"`` in a CSV all match label 1).

    Args:
        registry: Where the version lives.
        ref: ``name``, ``name:3`` or ``name@alias``.
        data: A CSV, Parquet, ``.npz`` or ``.npy`` file (see :mod:`shipyard.workflows.data`).
        target: The label column; for ``.npz`` the target array (default ``"y"``).
        runtime_settings: ONNX Runtime threads and providers.
        store: Save the metrics on the version as ``metrics["eval"]``.
        actor: Who evaluated (recorded with the metadata change).
        batch_size: Rows per runtime call.
        reference_root: The monitoring folder: when the version has no drift reference
            there yet, this data (features and predictions) becomes it.

    Returns:
        The metrics, also stored when ``store`` is true.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidInputError: the version's task is neither classification nor regression, or
            no target was named for a table.
        InvalidData: the data cannot be read, lacks the target, or has non-numeric features.
        SignatureMismatch: the data does not fit the model's inputs.
        RuntimeLoadError, InferenceError: the engine failed.

    Example:
        >>> res = evaluate(reg, "iris@prod", Path("iris.csv"), target="species")  # doctest: +SKIP
        >>> res.metrics["accuracy"]  # doctest: +SKIP
        0.96
    """
    mv = registry.get(ref)
    manifest = mv.manifest
    task = manifest.task.task
    if task not in (TaskType.CLASSIFICATION, TaskType.REGRESSION):
        raise InvalidInputError(
            f"evaluate needs a classification or regression model. "
            f"{mv.ref} has task {task.value!r} instead.",
            hint="Register the version with task='classification' (and class_labels) or "
            "task='regression' (`shipyard models register MODEL --task classification`).",
        )
    path = Path(data)
    if target is None:
        if data_format(path) != "npz":
            raise _no_target_error(path)
        target = "y"
    started = time.perf_counter()
    batches = iter_batches(
        path,
        signature=manifest.signature,
        batch_size=batch_size,
        target=target,
        feature_names=manifest.task.feature_names,
    )
    readout = Readout(manifest)
    sample = _reference_sample(mv, path, target, reference_root)
    runtime = OnnxRuntime(runtime_settings)
    runtime.load(registry.read_artifact(mv), manifest)
    y_parts: list[npt.NDArray[Any]] = []
    pred_parts: list[npt.NDArray[Any]] = []
    score_parts: list[npt.NDArray[Any]] = []
    try:
        for tensors, y in batches:
            outputs = runtime.predict(tensors)
            if sample is not None:
                sample.add(tensors, outputs)
            y_parts.append(np.asarray(y))
            if task is TaskType.CLASSIFICATION:
                pred_parts.append(readout.labels(outputs))
                scores = readout.scores(outputs)
                if scores is not None:
                    score_parts.append(scores)
            else:
                pred_parts.append(readout.values(outputs))
    finally:
        runtime.unload()
    if not y_parts:
        raise InvalidData(f"Data file {str(path)!r} must hold at least one row. It is empty.")
    y_true = np.concatenate(y_parts)
    y_pred = np.concatenate(pred_parts)
    if task is TaskType.CLASSIFICATION:
        metrics = _classification(readout, y_true, y_pred, score_parts)
    else:
        metrics = _regression(y_true, y_pred, target)
    n_rows = len(y_true)
    logger.info(
        "Evaluated %s on %s (%d rows) in %.1f s",
        mv.ref,
        path,
        n_rows,
        time.perf_counter() - started,
    )
    if store:
        summary = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
        if len(metrics.get("labels", ())) <= MAX_STORED_LABELS and "confusion_matrix" in metrics:
            summary["confusion_matrix"] = metrics["confusion_matrix"]
        summary.update(data=str(path), n_rows=n_rows, target=target)
        registry.update_metadata(mv.ref, metrics={"eval": summary}, actor=actor)
    if sample is not None and reference_root is not None:
        try:
            sample.save(reference_root, mv.name, mv.version, source=str(path), how="evaluate")
            logger.info("Stored %s's evaluation data as its drift reference", mv.ref)
        except ShipyardError as exc:  # drift is a bonus here: evaluation itself succeeded
            logger.warning("The evaluation data of %s is no drift reference: %s", mv.ref, exc)
    return EvaluationResult(ref=mv.ref, task=task.value, n_rows=n_rows, metrics=metrics)


def _reference_sample(
    mv: ModelVersion, path: Path, target: str, root: Path | None
) -> ReferenceSample | None:
    """A sample to store as the version's drift reference, when it has none yet."""
    if root is None:
        return None
    try:
        if reference_path(root, mv.name, mv.version).exists():
            return None
        return new_sample(mv, path, target)
    except ShipyardError as exc:
        logger.warning("No drift reference from the evaluation of %s: %s", mv.ref, exc)
        return None


def _classification(
    readout: Readout,
    y_true: npt.NDArray[Any],
    y_pred: npt.NDArray[Any],
    score_parts: list[npt.NDArray[Any]],
) -> dict[str, Any]:
    reference = readout.class_labels if readout.class_labels is not None else y_pred
    y_true = align_labels(y_true, reference)
    labels: list[Any] | None = None
    if readout.class_labels is not None:
        known = readout.class_labels.tolist()
        seen = {str(v) for v in known}
        extra = sorted({v for v in np.unique(y_true).tolist() if str(v) not in seen}, key=str)
        labels = known + extra
    metrics = classification_metrics(y_true, y_pred, labels=labels)
    if score_parts:
        scores = np.concatenate(score_parts)
        order = labels if labels is not None else metrics["labels"]
        if scores.ndim == 2 and scores.shape[1] == 2 and len(order) == 2:
            try:
                metrics["roc_auc"] = roc_auc_binary(y_true, scores[:, 1], pos_label=order[1])
            except InvalidInputError:
                logger.info("ROC AUC skipped: the data holds a single class")
    return metrics


def _regression(y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any], target: str) -> dict[str, Any]:
    try:
        y = np.asarray(y_true, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidData(
            f"Target {target!r} must be numeric for a regression model. "
            f"Got values like {y_true[:1].tolist()} instead."
        ) from None
    return regression_metrics(y, y_pred)
