"""PyTorch ``nn.Module`` and TorchScript → ONNX through ``torch.onnx.export`` (extra ``torch``).

A sample input is required (it drives the trace). Inputs are named ``input`` (one tensor)
or ``input_0``, ``input_1`` … (a tuple), or keep the names of a ``{name: array}`` mapping;
outputs are ``output`` or ``output_0`` … (or the keys of a dict output). Axis 0 of every
input and output is the dynamic batch axis ``N``; ``dynamic_axes`` adds more (a sequence
axis, say). The TorchScript-based exporter is tried first (robust for small models), then
the torch.export-based one.

Imports: base, parity; torch inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard._utils.imports import optional_import
from shipyard.convert.base import BATCH_DIM, ConversionRequest, ConversionResult, finish, quiet
from shipyard.errors import ConversionError, InvalidData, InvalidInputError, UnsupportedModel
from shipyard.spec import TaskSchema, TaskType

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["DEFAULT_OPSET", "convert_torch", "convert_torchscript", "named_sample", "task_schema"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
"""Opset for torch exports when the caller names none (well supported by onnxruntime)."""


def named_sample(sample: Any, *, what: str) -> dict[str, npt.NDArray[Any]]:
    """The sample input as named numpy arrays (float64 narrowed to float32).

    A single array is ``input``; a tuple or list is ``input_0`` …; a mapping keeps its names.

    Raises:
        InvalidInputError: no sample, or a value that is not array-like.
    """
    import numpy as np

    if sample is None:
        raise InvalidInputError(
            f"A {what} model needs a sample input to trace. Got none.",
            hint="Pass sample_input (a tensor or array shaped like one batch).",
        )
    if isinstance(sample, Mapping):
        items = [(str(k), v) for k, v in sample.items()]
    elif isinstance(sample, tuple | list):
        items = [("input" if len(sample) == 1 else f"input_{i}", v) for i, v in enumerate(sample)]
    else:
        items = [("input", sample)]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, value in items:
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Sample input {name!r} must be an array or tensor. Got {type(value).__name__}."
            ) from exc
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if arr.ndim == 0 or arr.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"Sample input {name!r} must be a numeric array with a batch axis. "
                f"Got dtype {arr.dtype} and shape {arr.shape}."
            )
        out[name] = arr
    return out


def doubled_batch(sample: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """The sample plus its rows reversed: a different batch size proves axis 0 is dynamic."""
    import numpy as np

    return {k: np.concatenate([v, v[::-1]], axis=0) for k, v in sample.items()}


def task_schema(request: ConversionRequest, output_names: Sequence[str]) -> TaskSchema:
    """Task schema for a network: "other" unless the caller says classification/regression."""
    task = request.task or TaskType.OTHER
    first = output_names[0] if output_names else None
    if task is TaskType.CLASSIFICATION:
        return TaskSchema(
            task=task,
            class_labels=request.class_labels,
            scores_output=first,
            feature_names=request.feature_names,
        )
    if task is TaskType.REGRESSION:
        return TaskSchema(task=task, scores_output=first, feature_names=request.feature_names)
    return TaskSchema(task=task, feature_names=request.feature_names)


def _output_names(outputs: Any) -> list[str]:
    if isinstance(outputs, Mapping):
        return [str(k) for k in outputs]
    if isinstance(outputs, tuple | list):
        return ["output" if len(outputs) == 1 else f"output_{i}" for i in range(len(outputs))]
    return ["output"]


def _flatten(outputs: Any) -> list[Any]:
    if isinstance(outputs, Mapping):
        return list(outputs.values())
    if isinstance(outputs, tuple | list):
        return list(outputs)
    return [outputs]


def _export(
    torch: Any,
    model: Any,
    sample: Mapping[str, npt.NDArray[Any]],
    request: ConversionRequest,
    *,
    scripted: bool,
) -> tuple[Any, list[str]]:
    """Export to ONNX; return (ModelProto, output names)."""
    import onnx

    args = tuple(torch.from_numpy(v.copy()) for v in sample.values())
    in_names = list(sample)
    with torch.no_grad(), quiet():
        outputs = model(*args)
    out_names = _output_names(outputs)
    dynamic: dict[str, dict[int, str]] = {n: {0: BATCH_DIM} for n in [*in_names, *out_names]}
    for name, axes in (request.dynamic_axes or {}).items():
        if name not in dynamic:
            raise InvalidInputError(
                f"dynamic_axes must name model inputs or outputs {[*in_names, *out_names]}. "
                f"Got {name!r} instead."
            )
        dynamic[name].update({int(a): str(d) for a, d in axes.items()})
    path = request.workdir / "torch-export.onnx"
    request.workdir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "input_names": in_names,
        "output_names": out_names,
        "dynamic_axes": dynamic,
        "opset_version": request.opset or DEFAULT_OPSET,
    }
    errors: list[str] = []
    for dynamo in (False, True):
        if dynamo and scripted:
            break
        try:
            with quiet():
                torch.onnx.export(model, args, str(path), dynamo=dynamo, verbose=False, **kwargs)
        except Exception as exc:  # the exporters raise many unrelated types
            logger.debug("torch.onnx.export(dynamo=%s) failed: %s", dynamo, exc)
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        model_proto = onnx.load(str(path))
        path.unlink(missing_ok=True)
        return model_proto, out_names
    raise ConversionError(
        f"torch.onnx.export must succeed on {type(model).__name__}. Got: {'; '.join(errors)}",
        hint="Check the model traces with this sample, or export it to ONNX yourself.",
    )


def _convert(
    torch: Any, model: Any, request: ConversionRequest, *, framework: str, scripted: bool
) -> ConversionResult:
    sample = named_sample(request.sample_input, what=framework)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        onx, out_names = _export(torch, model, sample, request, scripted=scripted)

        def reference(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
            import numpy as np

            args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in sample)
            with torch.no_grad(), quiet():
                outs = _flatten(model(*args))
            return {
                name: out.detach().cpu().numpy() for name, out in zip(out_names, outs, strict=True)
            }

        return finish(
            onx,
            request,
            framework=framework,
            framework_version=str(torch.__version__),
            task=task_schema(request, out_names),
            reference=reference,
            sample=doubled_batch(sample),
            sample_source="user",
        )
    finally:
        model.train(was_training)


def convert_torch(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert a ``torch.nn.Module`` traced on ``request.sample_input``.

    Raises:
        MissingDependency: torch is not installed (extra ``torch``).
        InvalidInputError: no sample input.
        ConversionError: both exporters failed.
        ParityCheckFailed: ONNX outputs differ beyond tolerance.
    """
    torch = optional_import("torch", extra="torch")
    if not isinstance(source, torch.nn.Module):
        raise UnsupportedModel(f"A torch model must be an nn.Module. Got {type(source).__name__}.")
    scripted = isinstance(source, torch.jit.ScriptModule)
    return _convert(
        torch, source, request, framework="torchscript" if scripted else "torch", scripted=scripted
    )


def convert_torchscript(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert a TorchScript file (``torch.jit.save``) or ScriptModule.

    ``torch.jit.load`` reads code and tensors, not pickled Python objects.

    Raises:
        MissingDependency: torch is not installed (extra ``torch``).
        InvalidData: the file is not a TorchScript archive.
        ConversionError: the exporter failed.
        ParityCheckFailed: ONNX outputs differ beyond tolerance.
    """
    torch = optional_import("torch", extra="torch")
    if isinstance(source, str | Path):
        try:
            model = torch.jit.load(str(source), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise InvalidData(
                f"A TorchScript file must be saved with torch.jit.save. Got {source} which "
                f"torch.jit.load cannot read: {str(exc).splitlines()[0]}",
                hint="Save with torch.jit.save(torch.jit.script(model), path).",
            ) from exc
    elif isinstance(source, torch.jit.ScriptModule):
        model = source
    else:
        raise UnsupportedModel(
            f"A TorchScript model must be a file or ScriptModule. Got {type(source).__name__}."
        )
    return _convert(torch, model, request, framework="torchscript", scripted=True)
