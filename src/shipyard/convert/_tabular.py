"""Shared by the scikit-learn and boosted-tree converters: one 2-D float input, fixed names.

Conventions: the input is ``input`` (FP32, (N, n_features)) unless the caller named it;
classifiers output ``label`` (N,) and ``probabilities`` (N, n_classes); regressors output
``prediction`` (N, 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.convert.base import (
    ConversionRequest,
    ConversionResult,
    finish,
    normalize_class_labels,
    quiet,
    rename_values,
    set_batch_dim,
)
from shipyard.errors import InvalidInputError
from shipyard.spec import TaskSchema, TaskType

if TYPE_CHECKING:
    import numpy.typing as npt
    import onnx

INPUT = "input"
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"


@dataclass(frozen=True)
class TabularSample:
    """The caller's sample as one float32 matrix, with the input name and column names."""

    name: str
    rows: npt.NDArray[Any] | None
    columns: tuple[str, ...] | None


def tabular_sample(request: ConversionRequest) -> TabularSample:
    """Read ``request.sample_input``: an array, a DataFrame, or ``{name: array}``.

    Raises:
        InvalidInputError: more than one named input, or not a 2-D numeric table.
    """
    import numpy as np

    value = request.sample_input
    name = INPUT
    if value is None:
        return TabularSample(name, None, None)
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise InvalidInputError(
                "A tabular model takes one named input (a 2-D array). "
                f"Got {len(value)} inputs {sorted(value)} instead."
            )
        name, value = next(iter(value.items()))
    columns = getattr(value, "columns", None)
    try:
        rows = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"A tabular sample input must be numeric. Got {type(value).__name__} that numpy "
            "cannot turn into float32."
        ) from exc
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2:
        raise InvalidInputError(
            f"A tabular sample input must be 2-D (rows, features). Got shape {rows.shape} instead."
        )
    cols = tuple(str(c) for c in columns) if columns is not None else None
    return TabularSample(str(name), rows, cols)


def generated_rows(n_features: int, n_rows: int = 16, seed: int = 0) -> npt.NDArray[Any]:
    """Standard-normal float32 rows for a model the caller gave no sample for."""
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(np.float32)


def check_features(
    n_features: int, sample: TabularSample, request: ConversionRequest, fitted: Any
) -> tuple[str, ...] | None:
    """Feature names: the caller's, else the fitted DataFrame's columns, else None.

    Raises:
        InvalidInputError: the sample or the names do not have ``n_features`` columns.
    """
    if sample.rows is not None and sample.rows.shape[1] != n_features:
        raise InvalidInputError(
            f"The sample input must have {n_features} columns like the model. "
            f"Got {sample.rows.shape[1]} instead."
        )
    names = request.feature_names
    if names is None and fitted is not None:
        names = tuple(str(n) for n in fitted)
    if names is None:
        names = sample.columns
    if names is not None and len(names) != n_features:
        raise InvalidInputError(
            f"feature_names must name all {n_features} features. Got {len(names)} names instead."
        )
    return tuple(names) if names is not None else None


def finish_tabular(
    model: onnx.ModelProto,
    request: ConversionRequest,
    *,
    framework: str,
    framework_version: str | None,
    classifier: bool,
    classes: Any,
    sample: TabularSample,
    n_features: int,
    feature_names: tuple[str, ...] | None,
    predict: Callable[[npt.NDArray[Any]], npt.NDArray[Any]],
    predict_proba: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None,
) -> ConversionResult:
    """Standardize names and batch axes, record the task schema, and run parity."""
    import numpy as np

    outputs = [o.name for o in model.graph.output]
    if classifier:
        rename_values(model, {outputs[0]: LABEL, outputs[1]: PROBABILITIES})
    else:
        rename_values(model, {outputs[0]: PREDICTION})
    rename_values(model, {model.graph.input[0].name: sample.name})
    set_batch_dim(model)

    if classifier:
        labels = normalize_class_labels(classes)
        if request.class_labels is not None and tuple(request.class_labels) != labels:
            raise InvalidInputError(
                f"class_labels must match the model's own classes {list(labels)} (the label "
                f"output emits those). Got {list(request.class_labels)} instead.",
                hint="Leave class_labels out for scikit-learn and boosted-tree models.",
            )
        schema = TaskSchema(
            task=TaskType.CLASSIFICATION,
            class_labels=labels,
            label_output=LABEL,
            scores_output=PROBABILITIES,
            feature_names=feature_names,
        )
    else:
        schema = TaskSchema(
            task=TaskType.REGRESSION, scores_output=PREDICTION, feature_names=feature_names
        )

    def reference(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        x = np.asarray(inputs[sample.name], dtype=np.float32)
        with quiet():  # "X does not have valid feature names" and the like
            if classifier and predict_proba is not None:
                return {LABEL: np.asarray(predict(x)), PROBABILITIES: predict_proba(x)}
            return {PREDICTION: np.asarray(predict(x), dtype=np.float64).reshape(len(x), -1)}

    rows = sample.rows if sample.rows is not None else generated_rows(n_features)
    return finish(
        model,
        request,
        framework=framework,
        framework_version=framework_version,
        task=schema,
        reference=reference,
        sample={sample.name: rows},
        sample_source="user" if sample.rows is not None else "generated",
    )
