"""scikit-learn estimators and Pipelines → ONNX through skl2onnx (extra ``sklearn``).

Classifiers give ``label`` (N,) and ``probabilities`` (N, n_classes) as plain tensors (no
ZipMap); regressors give ``prediction`` (N, 1). The input is one FP32 matrix ``input``.

Imports: base, _tabular; scikit-learn and skl2onnx inside the function.
"""

from __future__ import annotations

from typing import Any

from shipyard._utils.imports import optional_import
from shipyard.convert._tabular import check_features, finish_tabular, tabular_sample
from shipyard.convert.base import ConversionRequest, ConversionResult, quiet
from shipyard.errors import ConversionError, UnsupportedModel

__all__ = ["convert_sklearn", "is_classifier"]

_BOOST_OPSET = 15


def is_classifier(model: Any) -> bool:
    """True for a classifier: sklearn says so, or it has ``classes_`` and ``predict_proba``."""
    try:
        from sklearn.base import is_classifier as _is_classifier

        if _is_classifier(model):
            return True
    except ImportError:  # pragma: no cover - boosted trees without scikit-learn
        pass
    return hasattr(model, "classes_") and hasattr(model, "predict_proba")


def _final_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def convert_sklearn(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert a fitted scikit-learn estimator or Pipeline.

    Raises:
        MissingDependency: scikit-learn or skl2onnx is not installed (extra ``sklearn``).
        UnsupportedModel: not fitted, or an estimator skl2onnx cannot convert.
        ParityCheckFailed: ONNX predictions differ beyond tolerance.
    """
    sklearn = optional_import("sklearn", extra="sklearn")
    skl2onnx = optional_import("skl2onnx", extra="sklearn")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    model: Any = source
    if not hasattr(model, "predict"):
        raise UnsupportedModel(
            f"A scikit-learn model must have a predict method. Got {type(model).__name__}.",
            hint="Pass a fitted estimator or Pipeline.",
        )
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise UnsupportedModel(
            f"A scikit-learn model must be fitted before conversion. Got an unfitted "
            f"{type(model).__name__}.",
            hint="Call fit() first.",
        ) from exc
    n_features = getattr(model, "n_features_in_", None)
    sample = tabular_sample(request)
    if n_features is None:
        if sample.rows is None:
            raise UnsupportedModel(
                f"The number of features of {type(model).__name__} must be known. Got a model "
                "without n_features_in_ and no sample input.",
                hint="Pass sample_input with a few rows.",
            )
        n_features = sample.rows.shape[1]
    feature_names = check_features(
        int(n_features), sample, request, getattr(model, "feature_names_in_", None)
    )
    classifier = is_classifier(model)
    target_opset: int | dict[str, int] | None = request.opset
    if _register_boost_steps(model):
        # onnxmltools' tree converters go up to opset 15 and ai.onnx.ml 3
        target_opset = {"": request.opset or _BOOST_OPSET, "ai.onnx.ml": 3}
    options: dict[Any, Any] | None = None
    if classifier:
        options = {id(_final_step(model)): {"zipmap": False}}
    try:
        with quiet():
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=[(sample.name, FloatTensorType([None, int(n_features)]))],
                options=options,
                target_opset=target_opset,
            )
    except Exception as exc:  # skl2onnx raises many unrelated types
        if "Unable to find a shape calculator" in str(exc) or "not supported" in str(exc):
            raise UnsupportedModel(
                f"skl2onnx cannot convert {type(model).__name__}: {str(exc).splitlines()[0]}",
                hint="Use estimators skl2onnx supports, or export to ONNX yourself.",
            ) from exc
        raise ConversionError(
            f"skl2onnx failed on {type(model).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    proba = getattr(model, "predict_proba", None) if classifier else None
    if classifier and len(onx.graph.output) < 2:  # pragma: no cover - skl2onnx always gives 2
        raise ConversionError("A converted classifier must have label and score outputs.")
    return finish_tabular(
        onx,
        request,
        framework="sklearn",
        framework_version=str(sklearn.__version__),
        classifier=classifier,
        classes=getattr(model, "classes_", []),
        sample=sample,
        n_features=int(n_features),
        feature_names=feature_names,
        predict=model.predict,
        predict_proba=proba,
    )


def _register_boost_steps(model: Any) -> bool:
    """Teach skl2onnx about XGBoost/LightGBM steps inside a Pipeline (via onnxmltools)."""
    steps = [s for _, s in getattr(model, "steps", [])]
    modules = {type(s).__module__.split(".")[0] for s in steps}
    if modules & {"xgboost", "lightgbm"}:
        from shipyard.convert.boost import register_skl2onnx_converters

        register_skl2onnx_converters()
        return True
    return False
