"""Convert trained models to ONNX and prove numeric parity with the source.

``convert`` picks a converter from the ``CONVERTERS`` table (by ``framework``, or detected
from the object's type or the file's extension and content), writes ``workdir/model.onnx``
and returns a :class:`ConversionResult` whose ``new_version`` is ready for the registry.

Example:
    >>> result = convert(fitted_pipeline, workdir=Path("out"), sample_input=x_train[:32])
    >>> result.new_version.task.label_output
    'label'

Imports: spec, errors, _utils. Every framework (and numpy, onnx) is imported only inside the
converter that needs it; starlette and click never.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shipyard.convert.base import (
    ConversionRequest,
    ConversionResult,
    Converter,
    normalize_class_labels,
    resolve_task,
)
from shipyard.convert.boost import convert_lightgbm, convert_xgboost
from shipyard.convert.keras import convert_keras
from shipyard.convert.onnx_file import convert_onnx
from shipyard.convert.parity import check_parity, generate_inputs
from shipyard.convert.sklearn import convert_sklearn
from shipyard.convert.tensorflow import convert_tensorflow
from shipyard.convert.torch import convert_torch, convert_torchscript
from shipyard.errors import (
    DataNotFound,
    InvalidData,
    InvalidInputError,
    UnsafeArtifact,
    UnsupportedModel,
)
from shipyard.spec import TaskType

__all__ = [
    "CONVERTERS",
    "FRAMEWORKS",
    "ConversionRequest",
    "ConversionResult",
    "Converter",
    "check_parity",
    "convert",
    "detect_framework",
    "generate_inputs",
]

CONVERTERS: Mapping[str, Converter] = {
    "keras": convert_keras,
    "lightgbm": convert_lightgbm,
    "onnx": convert_onnx,
    "sklearn": convert_sklearn,
    "tensorflow": convert_tensorflow,
    "torch": convert_torch,
    "torchscript": convert_torchscript,
    "xgboost": convert_xgboost,
}
"""framework name → converter. Add a framework here (see CONTRIBUTING)."""

FRAMEWORKS: tuple[str, ...] = tuple(sorted(CONVERTERS))

_PICKLE = "pickle"
_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})
_TORCH_SUFFIXES = frozenset({".pt", ".pth", ".torchscript", ".ptl"})
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_FILE_FRAMEWORKS = frozenset({"onnx", "keras", "torchscript", "xgboost", "lightgbm", "tensorflow"})
# first match in the object's MRO wins: XGBClassifier is also a sklearn estimator
_MODULE_FRAMEWORKS = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "keras": "keras",
    "sklearn": "sklearn",
    "onnx": "onnx",
    "torch": "torch",
}
_SUPPORTED_HINT = (
    "Supported: scikit-learn, XGBoost, LightGBM, PyTorch (nn.Module or TorchScript), Keras "
    "(.keras/.h5), TensorFlow SavedModel, and ONNX files."
)


def _unsupported(what: str) -> UnsupportedModel:
    return UnsupportedModel(what, hint=_SUPPORTED_HINT)


def _is_torchscript_zip(names: Sequence[str]) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidData(f"{path} must be a zip archive. Got a file zip cannot read.") from exc
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras"
    if _is_torchscript_zip(names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        raise _unsupported(
            f"A PyTorch file must be TorchScript (torch.jit.save). Got a torch.save pickle at "
            f"{path}, which runs code when loaded."
        )
    raise _unsupported(f"Cannot tell which framework wrote the zip archive {path}.")


def _detect_file(path: Path) -> str:
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tensorflow"
        raise _unsupported(f"A model folder must be a TensorFlow SavedModel. Got {path}.")
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        return _PICKLE
    if suffix == ".onnx":
        return "onnx"
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise InvalidData(f"Cannot read {path}: {exc.strerror}.") from exc
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if suffix == ".ubj" or (suffix == ".json" and b'"learner"' in head):
        return "xgboost"
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if suffix in _TORCH_SUFFIXES:
        raise _unsupported(
            f"A PyTorch file must be TorchScript (torch.jit.save). Got {path}, which is not a "
            "TorchScript archive."
        )
    raise _unsupported(f"Cannot tell which framework wrote {path}.")


def detect_framework(source: object) -> str:
    """The framework of an in-memory model or a model file.

    Files are recognized by extension and content: ``.onnx``; ``.keras`` (zip) and ``.h5``
    (HDF5) for Keras; TorchScript zips (``.pt``/``.pth``/``.torchscript``); XGBoost
    ``.json``/``.ubj``; LightGBM ``.txt`` (``tree`` header); SavedModel folders. Pickles
    (``.pkl``, ``.joblib``) give ``"pickle"``: their framework is known only after loading.

    Raises:
        DataNotFound: the path does not exist.
        InvalidData: the file cannot be read.
        UnsupportedModel: not a framework shipyard converts.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise DataNotFound(
                f"No model file at {path}.", hint="Check the path, relative to the current folder."
            )
        return _detect_file(path)
    for cls in type(source).__mro__:
        module = cls.__module__
        root = module.split(".")[0]
        if root == "torch" and module.startswith("torch.jit"):
            return "torchscript"
        if root in _MODULE_FRAMEWORKS:
            return _MODULE_FRAMEWORKS[root]
    raise _unsupported(
        f"shipyard cannot convert a {type(source).__module__}.{type(source).__name__}."
    )


def _load_pickle(path: Path, trust_pickle: bool) -> object:
    if not trust_pickle:
        raise UnsafeArtifact(
            f"Pickle files run arbitrary code when loaded. Got {path}; refusing to load it.",
            hint="pass --trust-pickle only if you trust the file's author",
        )
    try:
        import joblib

        loaded: object = joblib.load(path)
        return loaded
    except ImportError:  # pragma: no cover - joblib comes with scikit-learn
        import pickle

        with open(path, "rb") as fh:
            return pickle.load(fh)  # the caller trusts the file
    except Exception as exc:  # unpickling raises anything the payload raises
        raise InvalidData(f"Cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc


def convert(
    source: object | str | Path,
    *,
    workdir: Path,
    framework: str = "auto",
    sample_input: Any = None,
    task: TaskType | str | None = None,
    class_labels: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    allow_mismatch: bool = False,
    trust_pickle: bool = False,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> ConversionResult:
    """Convert a model to ``workdir/model.onnx`` and check parity with the source.

    Args:
        source: An in-memory model, or a path to a model file or SavedModel folder.
        workdir: A folder the caller owns; ``model.onnx`` is written there.
        framework: ``"auto"`` (detect) or one of :data:`FRAMEWORKS`.
        sample_input: Sample rows (array, DataFrame, tensor, tuple or ``{name: array}``).
            Required for PyTorch; generated from the signature elsewhere when omitted.
        task: For networks: ``"classification"``, ``"regression"`` … (default "other").
            Tabular models detect their own task.
        class_labels: Labels of the score columns of a network classifier.
        feature_names: Column names of a tabular model's input.
        opset: Target ONNX opset (default: each converter's own).
        atol: Absolute parity tolerance.
        rtol: Relative parity tolerance.
        allow_mismatch: Return a failed parity report instead of raising.
        trust_pickle: Allow loading ``.pkl``/``.joblib`` files, which run code.
        dynamic_axes: Extra dynamic axes for torch exports, ``{name: {axis: dim_name}}``.

    Returns:
        The ONNX path, the new version's description and the source file to keep.

    Raises:
        DataNotFound: the source path does not exist.
        InvalidData: the file cannot be read.
        UnsafeArtifact: a pickle without ``trust_pickle``, or ONNX external data outside
            the model's folder.
        UnsupportedModel: not a framework or model type shipyard converts.
        MissingDependency: the framework's extra is not installed.
        ParityCheckFailed: ONNX outputs differ beyond tolerance (unless ``allow_mismatch``).
        ConversionError: the export itself failed.
    """
    if atol < 0 or rtol < 0:
        raise InvalidInputError(f"atol and rtol must be >= 0. Got {atol} and {rtol} instead.")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise InvalidInputError(f"opset must be a positive integer. Got {opset!r} instead.")
    if framework != "auto" and framework not in CONVERTERS:
        raise _unsupported(
            f"framework must be 'auto' or one of {list(FRAMEWORKS)}. Got {framework!r}."
        )
    source_path: Path | None = None
    model: object = source
    if isinstance(source, str | Path):
        path = Path(source)
        detected = detect_framework(path)
        source_path = path if path.is_file() else None
        if detected == _PICKLE:
            model = _load_pickle(path, trust_pickle)
            detected = detect_framework(model)
        else:
            model = path
        fw = detected if framework == "auto" else framework
        if model is path and fw not in _FILE_FRAMEWORKS:
            raise _unsupported(f"A {fw} model cannot be read from {path}; pass the model object.")
    else:
        fw = detect_framework(source) if framework == "auto" else framework
    request = ConversionRequest(
        workdir=Path(workdir),
        sample_input=sample_input,
        task=resolve_task(task),
        class_labels=normalize_class_labels(class_labels) if class_labels is not None else None,
        feature_names=tuple(str(n) for n in feature_names) if feature_names is not None else None,
        opset=opset,
        atol=float(atol),
        rtol=float(rtol),
        allow_mismatch=allow_mismatch,
        trust_pickle=trust_pickle,
        dynamic_axes=dynamic_axes,
        source_path=source_path,
    )
    return CONVERTERS[fw](model, request)
