"""Plain ONNX models, registered as they are after ``onnx.checker`` and shape inference.

External-data files must stay inside the model's own folder: absolute locations, ``..``
and symlinks that resolve outside are refused (UnsafeArtifact). The weights are inlined
into ``workdir/model.onnx``. There is no source model to compare with, so parity is
skipped, but the model is run once under onnxruntime to prove it loads and runs.

Imports: base, parity, _utils.fs; onnx inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from shipyard._utils.fs import is_within
from shipyard.convert.base import (
    ConversionRequest,
    ConversionResult,
    finish,
    normalize_class_labels,
    signature_from_onnx,
)
from shipyard.convert.torch import named_sample
from shipyard.errors import (
    ConversionError,
    DataNotFound,
    InvalidData,
    UnsafeArtifact,
    UnsupportedModel,
)
from shipyard.spec import Signature, TaskSchema, TaskType

if TYPE_CHECKING:
    import onnx

__all__ = ["check_external_data", "convert_onnx"]


def _tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def check_external_data(model: onnx.ModelProto, root: Path) -> None:
    """Refuse external-data locations that leave ``root`` (the model file's folder).

    Raises:
        UnsafeArtifact: an absolute location, a ``..`` component, or a symlink outside.
        DataNotFound: a referenced data file does not exist.
    """
    import onnx

    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            raise InvalidData(
                f"External tensor {tensor.name!r} must name a data file. Got no location."
            )
        posix, windows = PurePosixPath(location), PureWindowsPath(location)
        if posix.is_absolute() or windows.is_absolute() or windows.drive or location[0] in "/\\":
            raise UnsafeArtifact(
                f"External data locations must be relative to the model's folder. Got absolute "
                f"path {location!r} for tensor {tensor.name!r}.",
                hint="Save the model with onnx.save_model(..., location='weights.bin').",
            )
        if ".." in posix.parts or ".." in windows.parts:
            raise UnsafeArtifact(
                f"External data locations must stay inside the model's folder. Got {location!r} "
                f"(with '..') for tensor {tensor.name!r}."
            )
        candidate = root / location
        if not is_within(root, candidate):
            raise UnsafeArtifact(
                f"External data must stay inside the model's folder. Got {location!r} for tensor "
                f"{tensor.name!r}, which resolves to {candidate.resolve()} (a symlink outside)."
            )
        if not candidate.is_file():
            raise DataNotFound(
                f"External data file {location!r} for tensor {tensor.name!r} must exist next "
                f"to the model. Got no such file in {root}."
            )


def _load(path: Path) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    if not path.is_file():
        raise DataNotFound(f"No ONNX file at {path}.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise InvalidData(
            f"An ONNX file must be a serialized ModelProto. Got {path}: {exc}"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidData(f"An ONNX file must hold a graph. Got an empty model at {path}.")
    root = path.parent
    check_external_data(model, root)
    try:
        onnx.load_external_data_for_model(model, str(root))
    except (OSError, ValueError) as exc:
        raise InvalidData(f"Cannot read the external data of {path}: {exc}") from exc
    return model


_ML_CLASSIFIERS = frozenset({"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier"})
_ML_REGRESSORS = frozenset({"LinearRegressor", "TreeEnsembleRegressor", "SVMRegressor"})
_LABEL_ATTRS = ("classlabels_int64s", "classlabels_strings", "classlabels_ints")


def _detect_task(model: onnx.ModelProto, signature: Signature) -> tuple[TaskType, Any]:
    """(task, class labels or None) read from the graph.

    Classifier/regressor nodes of ``ai.onnx.ml``, or the ``label`` + ``probabilities``
    outputs that skl2onnx and onnxmltools write.
    """
    import onnx

    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _ML_CLASSIFIERS:
            for attr in node.attribute:
                if attr.name in _LABEL_ATTRS:
                    values = onnx.helper.get_attribute_value(attr)
                    labels = [v.decode() if isinstance(v, bytes) else v for v in values]
                    if labels:
                        return TaskType.CLASSIFICATION, labels
            return TaskType.CLASSIFICATION, None
    names = {o.name for o in signature.outputs}
    if "label" in names and names & {"probabilities", "scores"}:
        return TaskType.CLASSIFICATION, None
    if any(n.domain == "ai.onnx.ml" and n.op_type in _ML_REGRESSORS for n in model.graph.node):
        return TaskType.REGRESSION, None
    return TaskType.OTHER, None


def _task(request: ConversionRequest, model: onnx.ModelProto, signature: Signature) -> TaskSchema:
    outputs = [o.name for o in signature.outputs]
    detected, labels = _detect_task(model, signature)
    task = request.task or detected
    if task is TaskType.CLASSIFICATION:
        label = "label" if "label" in outputs else None
        scores = [o for o in outputs if o != label]
        preferred = next((n for n in ("probabilities", "scores") if n in outputs), None)
        class_labels = request.class_labels
        if class_labels is None and labels is not None:
            class_labels = normalize_class_labels(labels)
        return TaskSchema(
            task=task,
            class_labels=class_labels,
            label_output=label,
            scores_output=preferred or (scores[0] if scores else None),
            feature_names=request.feature_names,
        )
    if task is TaskType.REGRESSION:
        return TaskSchema(
            task=task,
            scores_output=outputs[0] if outputs else None,
            feature_names=request.feature_names,
        )
    return TaskSchema(task=task, feature_names=request.feature_names)


def convert_onnx(source: object, request: ConversionRequest) -> ConversionResult:
    """Check and register a plain ONNX model (a ``.onnx`` file or a ``ModelProto``).

    Raises:
        DataNotFound: the file or one of its external-data files is missing.
        InvalidData: the file is not an ONNX model.
        UnsafeArtifact: external data reaches outside the model's folder.
        ConversionError: onnx.checker rejects the model, or onnxruntime cannot run it.
    """
    import onnx

    if isinstance(source, onnx.ModelProto):
        model = source
        for tensor in _tensors(model.graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ConversionError(
                    "An in-memory ONNX model must hold its weights. Got a tensor stored "
                    f"externally ({tensor.name!r}).",
                    hint="Pass the .onnx file path instead.",
                )
    else:
        if not isinstance(source, str | os.PathLike):
            raise UnsupportedModel(
                f"An ONNX model must be a ModelProto or a path. Got {type(source).__name__}."
            )
        model = _load(Path(source))
    signature = signature_from_onnx(model)
    sample: Mapping[str, Any] | None = None
    if request.sample_input is not None:
        given = request.sample_input
        if not isinstance(given, Mapping) and len(signature.inputs) == 1:
            given = {signature.inputs[0].name: given}
        sample = named_sample(given, what="onnx")
    return finish(
        model,
        request,
        framework="onnx",
        framework_version=str(onnx.__version__),
        task=_task(request, model, signature),
        reference=None,
        sample=sample,
        sample_source="user" if sample is not None else "generated",
    )
