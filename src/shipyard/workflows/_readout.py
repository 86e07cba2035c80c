"""Turn raw model outputs into predictions, following the version's task schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidData, InvalidInputError
from shipyard.spec import TaskType

if TYPE_CHECKING:
    from shipyard.spec import ModelManifest

_TEXT = frozenset("OSU")


class Readout:
    """Reads labels, class scores or regression values out of one version's outputs.

    Args:
        manifest: The version's manifest (signature and task schema).
    """

    def __init__(self, manifest: ModelManifest) -> None:
        self.schema = manifest.task
        self.task = manifest.task.task
        self.output_names = [s.name for s in manifest.signature.outputs]
        first = self.output_names[0] if self.output_names else None
        self.label_output = self.schema.label_output
        self.scores_output = self.schema.scores_output
        if self.task is TaskType.CLASSIFICATION and self.label_output is None:
            self.scores_output = self.scores_output or first
        if self.task is TaskType.REGRESSION:
            self.scores_output = self.scores_output or first
        labels = self.schema.class_labels
        self.class_labels: npt.NDArray[Any] | None = (
            None if labels is None else np.asarray(list(labels))
        )

    def scores(self, outputs: dict[str, npt.NDArray[Any]]) -> npt.NDArray[Any] | None:
        """Class scores (N, C) or regression values, or None when the model has none."""
        if self.scores_output is None:
            return None
        return outputs[self.scores_output]

    def labels(self, outputs: dict[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """Predicted class labels, shape (N,).

        Raises:
            InvalidData: the scores output's width does not match the class labels.
        """
        if self.label_output is not None:
            return outputs[self.label_output].reshape(-1)
        scores = self.scores(outputs)
        if scores is None:  # pragma: no cover - Readout always has one output to use
            raise InvalidInputError("A classifier must have a label or a scores output.")
        if scores.ndim == 1 or scores.shape[1] == 1:
            idx = (scores.reshape(-1) > 0.5).astype(np.int64)
        else:
            idx = np.argmax(scores, axis=1)
        if self.class_labels is None:
            return idx
        width = 2 if scores.ndim == 1 or scores.shape[1] == 1 else scores.shape[1]
        if width != len(self.class_labels):
            raise InvalidData(
                f"Output {self.scores_output!r} must have one column per class label "
                f"({len(self.class_labels)}). Got {width} columns instead."
            )
        return self.class_labels[idx]

    def values(self, outputs: dict[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """Regression predictions: (N,) for one target, (N, k) for several."""
        scores = self.scores(outputs)
        if scores is None:  # pragma: no cover - Readout always has one output to use
            raise InvalidInputError("A regressor must have an output.")
        if scores.ndim == 2 and scores.shape[1] == 1:
            return scores.reshape(-1)
        return scores

    def class_names(self, n_columns: int) -> list[str]:
        """Names of score columns: the class labels, else 0..C-1."""
        if self.class_labels is not None and len(self.class_labels) == n_columns:
            return [str(v) for v in self.class_labels.tolist()]
        return [str(i) for i in range(n_columns)]


def align_labels(y: npt.NDArray[Any], reference: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``y`` converted to the kind of ``reference`` (the class labels or predictions).

    CSV readers give ints, floats (``1.0``) or text for the same labels; comparing them
    with the model's labels needs one type. Values that cannot be converted are left as
    they are and simply never match.
    """
    y = np.asarray(y).reshape(-1)
    kind = reference.dtype.kind
    if kind in "iub":
        if y.dtype.kind in "iub":
            return y.astype(np.int64)
        numeric = _as_float(y)
        if numeric is not None and np.all(np.isfinite(numeric)) and np.all(numeric % 1 == 0):
            return numeric.astype(np.int64)
        return y
    if kind == "f":
        numeric = _as_float(y)
        return y if numeric is None else numeric
    # text labels: 1.0 read from a CSV means "1"
    if y.dtype.kind == "f":
        numeric = y.astype(np.float64)
        if np.all(np.isfinite(numeric)) and np.all(numeric % 1 == 0):
            return numeric.astype(np.int64).astype(str).astype(object)
    return y.astype(str).astype(object)


def _as_float(y: npt.NDArray[Any]) -> npt.NDArray[np.float64] | None:
    try:
        return np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def text_labels(values: npt.NDArray[Any]) -> bool:
    """True when labels are strings."""
    return values.dtype.kind in _TEXT
