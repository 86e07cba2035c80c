"""Keras 3 models (``.keras``, legacy ``.h5``, or in memory) → ONNX (extra ``keras``).

Keras runs on the torch backend (``KERAS_BACKEND=torch`` unless the caller set one) and
exports with ``model.export(path, format="onnx")``. Inputs are renamed like torch exports
(``input`` or the sample's names), outputs to ``output`` / ``output_0`` …; axis 0 of every
input and output is the symbolic batch axis ``N``, verified by running batch 1 and batch 7.

Imports: base, parity, torch (for the shared sample helpers); keras inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard._utils.imports import optional_import
from shipyard.convert.base import (
    ConversionRequest,
    ConversionResult,
    finish,
    quiet,
    rename_values,
    set_batch_dim,
)
from shipyard.convert.torch import doubled_batch, named_sample, task_schema
from shipyard.errors import ConfigError, ConversionError, InvalidData, UnsupportedModel

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["convert_keras", "load_keras"]

_SAMPLE_ROWS = 2
_DYNAMIC_DIM = 4
_CHECK_BATCHES = (1, 7)


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = optional_import("keras", extra="keras")
    backend = keras.backend.backend()
    if backend != "torch":
        raise ConfigError(
            f"Keras must run on the torch backend for ONNX export. Got {backend!r} instead.",
            hint="Set KERAS_BACKEND=torch before Python imports keras.",
        )
    return keras


def load_keras(path: Path) -> Any:
    """Load a ``.keras`` or ``.h5`` model with ``keras.saving.load_model`` (safe mode).

    Raises:
        InvalidData: keras cannot read the file.
    """
    keras = _import_keras()
    try:
        with quiet():
            return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # keras raises ValueError, OSError, TypeError ...
        raise InvalidData(
            f"A Keras model file must load with keras.saving.load_model. Got {path}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def _generated_sample(model: Any) -> dict[str, npt.NDArray[Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = list(model.inputs)
    out: dict[str, npt.NDArray[Any]] = {}
    for i, tensor in enumerate(inputs):
        shape = tuple(
            (_SAMPLE_ROWS if j == 0 else _DYNAMIC_DIM) if d is None else int(d)
            for j, d in enumerate(tensor.shape)
        )
        dtype = np.dtype(str(tensor.dtype))
        name = "input" if len(inputs) == 1 else f"input_{i}"
        if dtype.kind == "f":
            out[name] = rng.normal(size=shape).astype(dtype)
        else:
            out[name] = rng.integers(0, 8, size=shape).astype(dtype)
    return out


def convert_keras(source: object, request: ConversionRequest) -> ConversionResult:
    """Convert a Keras model object or a ``.keras`` / ``.h5`` file.

    Raises:
        MissingDependency: keras is not installed (extra ``keras``).
        ConfigError: keras was already imported with a backend other than torch.
        InvalidData: the file cannot be loaded.
        ConversionError: the export failed or its batch axis is not dynamic.
        ParityCheckFailed: ONNX outputs differ beyond tolerance.
    """
    import numpy as np
    import onnx

    keras = _import_keras()
    model = load_keras(Path(source)) if isinstance(source, str | Path) else source
    if not isinstance(model, keras.Model):
        raise UnsupportedModel(f"A Keras model must be a keras.Model. Got {type(model).__name__}.")
    sample = (
        named_sample(request.sample_input, what="keras")
        if request.sample_input is not None
        else _generated_sample(model)
    )
    names = list(sample)

    def run(inputs: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        args = [np.ascontiguousarray(inputs[n]) for n in names]
        with quiet():
            out = model(args[0] if len(args) == 1 else args, training=False)
            flat = list(out.values()) if isinstance(out, Mapping) else out
            flat = list(flat) if isinstance(flat, list | tuple) else [flat]
            return [np.asarray(keras.ops.convert_to_numpy(o)) for o in flat]

    first = run(sample)  # builds the model and fixes its output count
    out_names = ["output"] if len(first) == 1 else [f"output_{i}" for i in range(len(first))]
    request.workdir.mkdir(parents=True, exist_ok=True)
    tmp = request.workdir / "keras-export.onnx"
    try:
        with quiet():
            model.export(str(tmp), format="onnx", verbose=False)
        onx = onnx.load(str(tmp))
    except Exception as exc:  # keras/torch exporters raise many unrelated types
        raise ConversionError(
            f"Keras export to ONNX must succeed. Got: {str(exc).splitlines()[0]}",
            hint="Check the model runs on the torch backend with this sample.",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    graph_inputs = [v.name for v in onx.graph.input]
    graph_outputs = [v.name for v in onx.graph.output]
    if len(graph_inputs) != len(names) or len(graph_outputs) != len(out_names):
        raise ConversionError(
            f"The Keras export must have {len(names)} inputs and {len(out_names)} outputs like "
            f"the model. Got {len(graph_inputs)} and {len(graph_outputs)} instead."
        )
    rename_values(onx, dict(zip(graph_inputs, names, strict=True)))
    rename_values(onx, dict(zip(graph_outputs, out_names, strict=True)))
    set_batch_dim(onx)
    _check_batch_axis(onx, sample)

    def reference(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        return dict(zip(out_names, run(inputs), strict=True))

    return finish(
        onx,
        request,
        framework="keras",
        framework_version=str(keras.__version__),
        task=task_schema(request, out_names),
        reference=reference,
        sample=doubled_batch(sample),
        sample_source="user" if request.sample_input is not None else "generated",
    )


def _check_batch_axis(onx: Any, sample: Mapping[str, npt.NDArray[Any]]) -> None:
    """Run batch 1 and batch 7: a graph with a baked-in batch size fails here, not in serving."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        for n in _CHECK_BATCHES:
            feed = {k: np.resize(v, (n, *v.shape[1:])) for k, v in sample.items()}
            for out in session.run(None, feed):
                if out.shape[:1] != (n,):
                    raise ConversionError(
                        f"Every output must have the batch size on axis 0. Got shape {out.shape} "
                        f"for a batch of {n}."
                    )
    except ConversionError:
        raise
    except Exception as exc:  # onnxruntime raises pybind11 exception types
        raise ConversionError(
            "The exported Keras model must run at any batch size. Got an onnxruntime error: "
            f"{str(exc).splitlines()[0]}",
            hint="The model may hard-code its batch size; build it with Input(shape=...) only.",
        ) from exc
