"""The converter contract (Converter, ConversionRequest, ConversionResult) and ONNX helpers.

Every framework adapter turns a source model into ``workdir/model.onnx`` plus a
:class:`~shipyard.spec.NewVersion`; the helpers here read the signature and opset back out of
the ONNX graph, so every converter describes its model the same way.

Imports: spec, errors, _utils. onnx and numpy are imported inside the functions that need
them, so ``import shipyard.convert`` stays light.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shipyard.errors import ConversionError, InvalidData, InvalidInputError, UnsupportedModel
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec

if TYPE_CHECKING:
    import numpy.typing as npt
    import onnx

    Arrays = dict[str, npt.NDArray[Any]]
    Reference = Callable[[Mapping[str, npt.NDArray[Any]]], Mapping[str, npt.NDArray[Any]]]

__all__ = [
    "BATCH_DIM",
    "MODEL_FILENAME",
    "ConversionRequest",
    "ConversionResult",
    "Converter",
    "check_model",
    "finish",
    "normalize_class_labels",
    "quiet",
    "read_opset",
    "rename_values",
    "resolve_task",
    "set_batch_dim",
    "signature_from_onnx",
]

logger = logging.getLogger(__name__)

MODEL_FILENAME = "model.onnx"
BATCH_DIM = "N"


@dataclass(frozen=True)
class ConversionRequest:
    """What the caller asked for, handed unchanged to every converter.

    Attributes mirror the keyword arguments of :func:`shipyard.convert.convert`;
    ``source_path`` is the artifact file the model came from (None for in-memory objects).
    """

    workdir: Path
    sample_input: Any = None
    task: TaskType | None = None
    class_labels: tuple[str | int, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    opset: int | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    allow_mismatch: bool = False
    trust_pickle: bool = False
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    source_path: Path | None = None


@dataclass(frozen=True)
class ConversionResult:
    """A converted model, ready for ``ModelRegistry.register``.

    Attributes:
        onnx_path: ``workdir/model.onnx``.
        new_version: Signature, task schema, framework (and version), opset and parity.
        source_path: The original artifact file to keep, or None for in-memory models.
    """

    onnx_path: Path
    new_version: NewVersion
    source_path: Path | None = field(default=None)


class Converter(Protocol):
    """Turns one framework's model into ONNX.

    Example:
        >>> def convert_mine(source: object, request: ConversionRequest) -> ConversionResult:
        ...     ...  # export to request.workdir / "model.onnx", then return finish(...)
    """

    def __call__(self, source: object, request: ConversionRequest) -> ConversionResult:
        """Convert ``source`` (an in-memory model or a path) as ``request`` says.

        Raises:
            ConversionError: the model could not be exported or failed parity.
            MissingDependency: the framework's extra is not installed.
        """
        ...


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party warnings raised while exporting (tracer, deprecation notes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def resolve_task(value: TaskType | str | None) -> TaskType | None:
    """``value`` as a TaskType (None stays None).

    Raises:
        InvalidInputError: not one of the task names.
    """
    if value is None or isinstance(value, TaskType):
        return value
    try:
        return TaskType(str(value).lower())
    except ValueError:
        names = [t.value for t in TaskType]
        raise InvalidInputError(f"A task must be one of {names}. Got {value!r} instead.") from None


def normalize_class_labels(values: Any) -> tuple[str | int, ...]:
    """Class labels as plain ``int`` / ``str`` values (what a manifest can hold)."""
    out: list[str | int] = []
    for value in list(values):
        item = value.item() if hasattr(value, "item") else value
        if isinstance(item, bool):
            out.append(int(item))
        elif isinstance(item, int):
            out.append(item)
        elif isinstance(item, float) and item.is_integer():
            out.append(int(item))
        else:
            out.append(str(item))
    return tuple(out)


def read_opset(model: onnx.ModelProto) -> int | None:
    """The default-domain (``ai.onnx``) opset a model imports, or None when it has none."""
    versions = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions) if versions else None


def _dims(value_type: Any) -> tuple[int | None, ...]:
    shape = value_type.tensor_type.shape
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim
    )


def _tensor_spec(value: Any, kind: str) -> TensorSpec:
    if value.type.WhichOneof("value") != "tensor_type":
        raise UnsupportedModel(
            f"Every model {kind} must be a tensor. Got {value.type.WhichOneof('value')!r} "
            f"for {value.name!r} instead.",
            hint="Export classifiers without ZipMap (zipmap=False) so scores stay tensors.",
        )
    return TensorSpec(
        name=value.name,
        dtype=DType.from_onnx(value.type.tensor_type.elem_type),
        shape=_dims(value.type),
    )


def signature_from_onnx(model: onnx.ModelProto) -> Signature:
    """The model's graph inputs (initializers excluded) and outputs; dynamic dims are None.

    Raises:
        UnsupportedModel: an input or output is not a tensor (for example a ZipMap).
    """
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(
        _tensor_spec(v, "input") for v in model.graph.input if v.name not in initializers
    )
    outputs = tuple(_tensor_spec(v, "output") for v in model.graph.output)
    return Signature(inputs=inputs, outputs=outputs)


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run ``onnx.checker`` (full) and shape inference; return the inferred model.

    Raises:
        ConversionError: the checker rejects the model.
    """
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(
            f"The ONNX model must pass onnx.checker. Got: {str(exc).splitlines()[0]}"
        ) from exc
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # pragma: no cover - strict_mode=False rarely raises
        raise ConversionError(f"ONNX shape inference failed: {exc}") from exc


def rename_values(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename graph values in place (inputs, outputs, node edges, value_info)."""
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return
    graph = model.graph

    def rename_in(g: Any) -> None:
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in mapping:
                    node.input[i] = mapping[name]
            for i, name in enumerate(node.output):
                if name in mapping:
                    node.output[i] = mapping[name]
            for attr in node.attribute:
                if attr.g is not None and attr.HasField("g"):
                    rename_in(attr.g)
                for sub in attr.graphs:
                    rename_in(sub)

    rename_in(graph)
    for coll in (graph.input, graph.output, graph.value_info):
        for value in coll:
            if value.name in mapping:
                value.name = mapping[value.name]


def set_batch_dim(model: onnx.ModelProto, names: Sequence[str] | None = None) -> None:
    """Make axis 0 of the named graph inputs/outputs (default: all) the symbolic ``N``."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    for value in [*graph.input, *graph.output]:
        if value.name in initializers or (names is not None and value.name not in names):
            continue
        if value.type.WhichOneof("value") != "tensor_type":
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 0:
            continue
        dims[0].ClearField("dim_value")
        dims[0].dim_param = BATCH_DIM


def _save(model: onnx.ModelProto, workdir: Path) -> Path:
    import onnx

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / MODEL_FILENAME
    tmp = workdir / (MODEL_FILENAME + ".tmp")
    try:
        onnx.save_model(model, str(tmp))
    except (OSError, ValueError) as exc:
        raise InvalidData(f"Cannot write {path}: {exc}") from exc
    tmp.replace(path)
    return path


def finish(
    model: onnx.ModelProto,
    request: ConversionRequest,
    *,
    framework: str,
    framework_version: str | None,
    task: TaskSchema,
    reference: Reference | None,
    sample: Mapping[str, Any] | None,
    sample_source: str = "generated",
) -> ConversionResult:
    """Check, save and parity-test a converted model; build its ConversionResult.

    With ``reference`` None the model is only run once under onnxruntime (plain ONNX files).

    Raises:
        ConversionError: the checker rejects the model.
        ParityCheckFailed: outputs differ beyond tolerance and ``allow_mismatch`` is off.
    """
    from shipyard.convert import parity

    model = check_model(model)
    signature = signature_from_onnx(model)
    path = _save(model, request.workdir)
    if reference is None:
        report = parity.smoke_test(path, signature, sample=sample)
    else:
        inputs = dict(sample) if sample is not None else parity.generate_inputs(signature)
        report = parity.check_parity(
            reference,
            path,
            inputs,
            task=task,
            atol=request.atol,
            rtol=request.rtol,
            allow_mismatch=request.allow_mismatch,
            sample_source="user" if sample_source == "user" else "generated",
        )
    logger.info(
        "Converted %s model to %s (opset %s, parity %s)",
        framework,
        path,
        read_opset(model),
        "passed" if report.passed else "FAILED",
    )
    new = NewVersion(
        signature=signature,
        task=task,
        framework=framework,
        framework_version=framework_version,
        opset=read_opset(model),
        parity=report,
    )
    return ConversionResult(onnx_path=path, new_version=new, source_path=request.source_path)
