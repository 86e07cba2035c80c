"""XGBoost and LightGBM models → ONNX through onnxmltools (extra ``boost``).

Accepts the scikit-learn wrappers (``XGBClassifier``, ``LGBMRegressor`` …), native boosters,
and native model files: XGBoost ``.json`` / ``.ubj`` and LightGBM ``.txt`` (plain data, safe
to load). Outputs follow the tabular conventions: ``label`` + ``probabilities`` or
``prediction``, no ZipMap.

Imports: base, _tabular; xgboost, lightgbm and onnxmltools inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard._utils.imports import optional_import
from shipyard.convert._tabular import check_features, finish_tabular, tabular_sample
from shipyard.convert.base import ConversionRequest, ConversionResult, quiet
from shipyard.errors import ConversionError, InvalidData, UnsupportedModel

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["convert_lightgbm", "convert_xgboost", "register_skl2onnx_converters"]

_CLASSIFIER_PREFIXES = ("binary:", "multi:")
_REGRESSOR_PREFIXES = ("reg:", "count:", "survival:")


def _onnx_error(kind: str, exc: Exception) -> ConversionError:
    return ConversionError(f"onnxmltools failed on the {kind} model: {str(exc).splitlines()[0]}")


# --------------------------------------------------------------------------- XGBoost


def _xgb_from_booster(xgb: Any, booster: Any) -> Any:
    """A scikit-learn wrapper around a native booster, chosen from its objective."""
    import json

    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective.startswith(_CLASSIFIER_PREFIXES):
        model = xgb.XGBClassifier()
    elif objective.startswith(_REGRESSOR_PREFIXES):
        model = xgb.XGBRegressor()
    else:
        raise UnsupportedModel(
            f"An XGBoost model must be a classifier or regressor. Got objective {objective!r}.",
            hint="Ranking objectives are not supported.",
        )
    model.load_model(bytearray(booster.save_raw("ubj")))
    return model


def _load_xgb(xgb: Any, source: object) -> tuple[Any, Path | None]:
    if isinstance(source, str | Path):
        path = Path(source)
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            raise InvalidData(
                f"An XGBoost model file must be a saved .json or .ubj model. Got {path} "
                f"which XGBoost cannot read: {str(exc).splitlines()[0]}"
            ) from exc
        return _xgb_from_booster(xgb, booster), path
    if isinstance(source, xgb.Booster):
        return _xgb_from_booster(xgb, source), None
    if isinstance(source, xgb.XGBModel):
        return source, None
    raise UnsupportedModel(
        f"An XGBoost model must be an XGBModel, a Booster or a model file. "
        f"Got {type(source).__name__}."
    )


def convert_xgboost(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert an XGBoost classifier or regressor (object, Booster or .json/.ubj file).

    Raises:
        MissingDependency: xgboost or onnxmltools is not installed (extra ``boost``).
        InvalidData: the model file cannot be read.
        UnsupportedModel: a ranking or other unsupported objective.
        ParityCheckFailed: ONNX predictions differ beyond tolerance.
    """
    xgb = optional_import("xgboost", extra="boost")
    onnxmltools = optional_import("onnxmltools", extra="boost")
    from onnxmltools.convert.common.data_types import FloatTensorType

    model, _ = _load_xgb(xgb, source)
    booster = model.get_booster()
    n_features = int(booster.num_features())
    sample = tabular_sample(request)
    fitted_names = booster.feature_names
    feature_names = check_features(n_features, sample, request, fitted_names)
    export_model = model
    if fitted_names is not None:
        # onnxmltools reads split features as f0, f1, ...; drop the names on a copy
        export_model = type(model)()
        export_model.load_model(bytearray(booster.save_raw("ubj")))
        export_model.get_booster().feature_names = None
    classifier = isinstance(model, xgb.XGBClassifier)
    try:
        with quiet():
            onx = onnxmltools.convert_xgboost(
                export_model,
                initial_types=[(sample.name, FloatTensorType([None, n_features]))],
                target_opset=request.opset,
            )
    except Exception as exc:  # onnxmltools raises many unrelated types
        raise _onnx_error("XGBoost", exc) from exc
    classes = getattr(model, "classes_", None)
    if classifier and classes is None:  # pragma: no cover - load_model sets classes_
        classes = list(range(int(model.n_classes_)))
    return finish_tabular(
        onx,
        request,
        framework="xgboost",
        framework_version=str(xgb.__version__),
        classifier=classifier,
        classes=classes if classes is not None else [],
        sample=sample,
        n_features=n_features,
        feature_names=feature_names,
        predict=model.predict,
        predict_proba=model.predict_proba if classifier else None,
    )


# --------------------------------------------------------------------------- LightGBM


def _lgb_objective(booster: Any) -> str:
    for line in booster.model_to_string(num_iteration=0).splitlines():
        if line.startswith("objective="):
            return str(line.partition("=")[2].split(" ")[0])
        if line.startswith("Tree="):
            break
    return "regression"  # pragma: no cover - LightGBM always writes an objective


def _load_lgb(lgb: Any, source: object) -> tuple[Any, Any]:
    """(object handed to onnxmltools, scikit-learn wrapper or None)."""
    if isinstance(source, str | Path):
        try:
            return lgb.Booster(model_file=str(source)), None
        except lgb.basic.LightGBMError as exc:
            raise InvalidData(
                f"A LightGBM model file must be a saved text model. Got {source} which LightGBM "
                f"cannot read: {str(exc).splitlines()[0]}"
            ) from exc
    if isinstance(source, lgb.Booster):
        return source, None
    if isinstance(source, lgb.LGBMModel):
        return source, source
    raise UnsupportedModel(
        f"A LightGBM model must be an LGBMModel, a Booster or a .txt model file. "
        f"Got {type(source).__name__}."
    )


def _booster_predictors(
    booster: Any, objective: str
) -> tuple[bool, Any, Callable[[Any], Any], Callable[[Any], Any] | None]:
    """(classifier?, classes, predict, predict_proba) for a native LightGBM booster."""
    import numpy as np

    if objective in ("binary", "multiclass", "multiclassova", "cross_entropy"):
        n_classes = int(booster.num_model_per_iteration()) if objective != "binary" else 2
        n_classes = max(n_classes, 2)

        def proba(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
            p = np.asarray(booster.predict(x))
            return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

        def predict(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.asarray(np.argmax(proba(x), axis=1))

        return True, list(range(n_classes)), predict, proba
    if objective.startswith("lambdarank") or objective.startswith("rank"):
        raise UnsupportedModel(f"A LightGBM ranking objective is not supported. Got {objective!r}.")
    return False, [], booster.predict, None


def convert_lightgbm(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert a LightGBM classifier or regressor (object, Booster or .txt file).

    Raises:
        MissingDependency: lightgbm or onnxmltools is not installed (extra ``boost``).
        InvalidData: the model file cannot be read.
        ParityCheckFailed: ONNX predictions differ beyond tolerance.
    """
    lgb = optional_import("lightgbm", extra="boost")
    onnxmltools = optional_import("onnxmltools", extra="boost")
    from onnxmltools.convert.common.data_types import FloatTensorType

    to_export, wrapper = _load_lgb(lgb, source)
    booster = wrapper.booster_ if wrapper is not None else to_export
    n_features = int(booster.num_feature())
    names = booster.feature_name()
    default_names = [f"Column_{i}" for i in range(n_features)]
    fitted = getattr(wrapper, "feature_names_in_", None) if wrapper is not None else None
    if wrapper is None and list(names) != default_names:
        fitted = names
    sample = tabular_sample(request)
    feature_names = check_features(n_features, sample, request, fitted)
    if wrapper is not None:
        classifier = isinstance(wrapper, lgb.LGBMClassifier)
        classes: Any = getattr(wrapper, "classes_", [])
        predict, proba = wrapper.predict, (wrapper.predict_proba if classifier else None)
    else:
        classifier, classes, predict, proba = _booster_predictors(booster, _lgb_objective(booster))
    try:
        with quiet():
            onx = onnxmltools.convert_lightgbm(
                to_export,
                initial_types=[(sample.name, FloatTensorType([None, n_features]))],
                target_opset=request.opset,
                zipmap=False,
            )
    except Exception as exc:  # onnxmltools raises many unrelated types
        raise _onnx_error("LightGBM", exc) from exc
    return finish_tabular(
        onx,
        request,
        framework="lightgbm",
        framework_version=str(lgb.__version__),
        classifier=classifier,
        classes=classes,
        sample=sample,
        n_features=n_features,
        feature_names=feature_names,
        predict=predict,
        predict_proba=proba,
    )


def register_skl2onnx_converters() -> None:
    """Register the onnxmltools converters with skl2onnx, for boosters inside Pipelines."""
    optional_import("onnxmltools", extra="boost")
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        import xgboost as xgb
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import (
            convert_xgboost as xgb_converter,
        )
    except ImportError:  # pragma: no cover - only one of the two installed
        pass
    else:
        update_registered_converter(
            xgb.XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            xgb_converter,
            options=options,
        )
        update_registered_converter(
            xgb.XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            xgb_converter,
        )
    try:
        import lightgbm as lgb
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
            convert_lightgbm as lgb_converter,
        )
    except ImportError:  # pragma: no cover - only one of the two installed
        return
    update_registered_converter(
        lgb.LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        lgb_converter,
        options=options,
    )
    update_registered_converter(
        lgb.LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        lgb_converter,
    )
