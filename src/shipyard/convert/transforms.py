"""Pure file transforms of an fp32 ONNX model: each reads ``src`` and writes a new ``dst``.

Graph optimization (ONNX Runtime, saved offline), fp16 (fp32 inputs and outputs kept),
dynamic and static (QDQ or QOperator) int8 quantization, and magnitude pruning, unstructured
(zeroed weights) or structured (whole output channels removed, so the graph shrinks).
Measuring the results and deciding which to keep lives in ``workflows/optimize.py``.

Imports: errors, convert.base; onnx, onnxruntime and numpy inside the functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shipyard.convert.base import quiet
from shipyard.errors import ConversionError, InvalidInputError

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "CALIBRATION_METHODS",
    "TransformResult",
    "optimize_graph",
    "prune_channels",
    "prune_magnitude",
    "quantize_dynamic",
    "quantize_static",
    "to_fp16",
]

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}
"""Op type -> index of the weight input that magnitude pruning may touch."""
_CHANNEL_PRESERVING = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "Dropout",
}
"""Ops between two weighted layers through which an output channel stays one channel."""


@dataclass(frozen=True)
class TransformResult:
    """What a transform wrote.

    Attributes:
        path: The new ONNX file.
        technique: A short name, e.g. ``"int8-static"``.
        parameters: Everything needed to reproduce it (recorded as lineage).
        details: What it found, e.g. how many channels were removed.
    """

    path: Path
    technique: str
    parameters: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _load(src: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(src))
    except Exception as exc:
        raise ConversionError(
            f"Model {str(src)!r} must be a readable ONNX file. Loading failed: {exc}"
        ) from exc


def _save(model: Any, dst: Path) -> None:
    import onnx

    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))


def _fail(what: str, src: Path, exc: Exception) -> ConversionError:
    return ConversionError(
        f"{what} of {str(src)!r} must succeed. ONNX Runtime failed: {exc}",
        hint="Run the model through `shipyard models register` first, so it is a valid "
        "fp32 ONNX model; skip this technique with --techniques.",
    )


# ---------------------------------------------------------------------------- graph


def optimize_graph(
    src: Path, dst: Path, *, level: Literal["basic", "extended"] = "extended"
) -> TransformResult:
    """Run ONNX Runtime's graph optimizer offline and save the result.

    The saved file loads faster, since the fusions are already done. The ``all`` level is
    not offered: its layout transforms are specific to this machine's CPU and ONNX
    Runtime warns against reloading such files elsewhere.

    Raises:
        InvalidInputError: an unknown level.
        ConversionError: ONNX Runtime could not optimize the model.
    """
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    if level not in levels:
        raise InvalidInputError(
            f"Graph optimization level must be one of {sorted(levels)}. Got {level!r} instead."
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _fail("Graph optimization", src, exc) from exc
    return TransformResult(dst, "ort-graph", {"level": level})


# ---------------------------------------------------------------------------- fp16


def to_fp16(src: Path, dst: Path) -> TransformResult:
    """Convert float32 weights and activations to float16, keeping fp32 inputs and outputs.

    Ops outside the default ONNX domain (``ai.onnx.ml`` classifiers and the like) stay in
    fp32, with casts around them.

    Raises:
        ConversionError: the model could not be converted.
    """
    from onnxruntime.transformers import float16

    model = _load(src)
    custom = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + custom
    try:
        with quiet():
            out = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=block, disable_shape_infer=False
            )
    except Exception as exc:
        raise _fail("fp16 conversion", src, exc) from exc
    _save(out, dst)
    return TransformResult(dst, "fp16", {"keep_io_types": True, "blocked_ops": custom})


# ---------------------------------------------------------------------------- int8


def quantize_dynamic(src: Path, dst: Path, *, per_channel: bool = False) -> TransformResult:
    """Quantize weights to int8 ahead of time and activations on the fly.

    Raises:
        ConversionError: ONNX Runtime could not quantize the model.
    """
    from onnxruntime import quantization as q

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet():
            q.quantize_dynamic(
                str(src), str(dst), weight_type=q.QuantType.QInt8, per_channel=per_channel
            )
    except Exception as exc:
        raise _fail("Dynamic quantization", src, exc) from exc
    return TransformResult(dst, "int8-dynamic", {"weight_type": "int8", "per_channel": per_channel})


class _Reader:
    """A ``CalibrationDataReader`` over in-memory sample arrays, in small batches."""

    def __init__(self, inputs: Mapping[str, npt.NDArray[Any]], batch_size: int) -> None:
        self._inputs = dict(inputs)
        self._batch_size = batch_size
        self._iter: Iterator[dict[str, npt.NDArray[Any]]] | None = None

    def _batches(self) -> Iterator[dict[str, npt.NDArray[Any]]]:
        n = len(next(iter(self._inputs.values())))
        for start in range(0, n, self._batch_size):
            yield {k: v[start : start + self._batch_size] for k, v in self._inputs.items()}

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def quantize_static(
    src: Path,
    dst: Path,
    calibration: Mapping[str, npt.NDArray[Any]],
    *,
    method: str = "minmax",
    quant_format: Literal["qdq", "qoperator"] = "qdq",
    per_channel: bool = True,
    activation_type: Literal["uint8", "int8"] = "uint8",
    preprocess: bool = True,
    batch_size: int = 32,
) -> TransformResult:
    """Quantize weights and activations to 8 bits, with ranges calibrated on sample data.

    Args:
        src: The fp32 model.
        dst: Where to write the quantized model.
        calibration: Sample inputs by input name (a few hundred rows of the validation set).
        method: ``minmax``, ``entropy`` or ``percentile``.
        quant_format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime
            fuses into int8 kernels) or ``qoperator`` (QLinearConv and friends).
        per_channel: One scale per output channel of each weight.
        activation_type: ``uint8`` activations with int8 weights take the U8S8 kernels,
            the fast path on x86.
        preprocess: Run ONNX Runtime's ``quant_pre_process`` (symbolic shape inference and
            graph cleanup) first.
        batch_size: Rows per calibration batch.

    Raises:
        InvalidInputError: an unknown method, format or empty calibration data.
        ConversionError: ONNX Runtime could not quantize the model.
    """
    import tempfile

    from onnxruntime import quantization as q

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    formats = {"qdq": q.QuantFormat.QDQ, "qoperator": q.QuantFormat.QOperator}
    if method not in methods:
        raise InvalidInputError(
            f"Calibration method must be one of {list(methods)}. Got {method!r} instead."
        )
    if quant_format not in formats:
        raise InvalidInputError(
            f"Quantization format must be one of {sorted(formats)}. Got {quant_format!r} instead."
        )
    if not calibration or min(len(v) for v in calibration.values()) == 0:
        raise InvalidInputError("Calibration data must hold at least one row. Got none instead.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    act = q.QuantType.QUInt8 if activation_type == "uint8" else q.QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="shipyard-quant-") as tmp:
        source = src
        if preprocess:
            try:
                with quiet():
                    q.quant_pre_process(str(src), str(Path(tmp) / "pre.onnx"))
                source = Path(tmp) / "pre.onnx"
            except Exception as exc:  # symbolic shape inference refuses some ONNX-ML graphs
                logger.info("quant_pre_process skipped for %s: %s", src, exc)
                preprocess = False

        def run(channelwise: bool) -> None:
            with quiet():
                q.quantize_static(
                    str(source),
                    str(dst),
                    _Reader(calibration, batch_size),
                    quant_format=formats[quant_format],
                    per_channel=channelwise,
                    activation_type=act,
                    weight_type=q.QuantType.QInt8,
                    calibrate_method=methods[method],
                    extra_options={"CalibTensorRangeSymmetric": False},
                )

        try:
            try:
                run(per_channel)
            except ValueError as exc:
                # ORT's QDQ bias-scale fix-up fails on per-channel MatMul with (1, N) biases
                if not per_channel:
                    raise
                logger.info("per-channel quantization of %s failed (%s); per-tensor", src, exc)
                per_channel = False
                run(per_channel)
        except Exception as exc:
            raise _fail("Static quantization", src, exc) from exc
    params = {
        "method": method,
        "format": quant_format,
        "per_channel": per_channel,
        "activation_type": activation_type,
        "weight_type": "int8",
        "preprocess": preprocess,
        "calibration_rows": min(len(v) for v in calibration.values()),
    }
    return TransformResult(dst, "int8-static", params)


# ---------------------------------------------------------------------------- pruning


def _initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def _uses(model: Any) -> dict[str, list[Any]]:
    uses: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def _attr(node: Any, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def prune_magnitude(src: Path, dst: Path, *, sparsity: float = 0.5) -> TransformResult:
    """Zero the smallest-magnitude ``sparsity`` share of each Conv/Gemm/MatMul weight.

    The graph keeps its shape (ONNX Runtime has no sparse CPU kernels for these ops), so
    this pays off on disk once compressed, and as a step before int8; no fine-tuning.

    Raises:
        InvalidInputError: ``sparsity`` is not in [0, 1).
    """
    import numpy as np
    from onnx import numpy_helper

    if not 0.0 <= sparsity < 1.0:
        raise InvalidInputError(f"Sparsity must be in [0, 1). Got {sparsity} instead.")
    model = _load(src)
    inits = _initializers(model)
    pruned = zeroed = total = 0
    for node in model.graph.node:
        idx = _WEIGHT_OPS.get(node.op_type)
        if idx is None or len(node.input) <= idx or node.input[idx] not in inits:
            continue
        init = inits[node.input[idx]]
        w = numpy_helper.to_array(init)
        if w.dtype.kind != "f" or w.ndim < 2:
            continue
        k = math.floor(w.size * sparsity)
        if k == 0:
            continue
        flat = np.abs(w).reshape(-1)
        cut = np.partition(flat, k - 1)[k - 1]
        out = np.where(np.abs(w) <= cut, np.zeros_like(w), w)
        init.CopyFrom(numpy_helper.from_array(out.astype(w.dtype), init.name))
        pruned += 1
        zeroed += int((out == 0).sum())
        total += w.size
    _save(model, dst)
    details = {"tensors": pruned, "zero_fraction": zeroed / total if total else 0.0}
    return TransformResult(dst, "prune", {"sparsity": sparsity}, details)


@dataclass
class _Producer:
    node: Any
    weight: str
    out_axis: int
    bias: str | None
    bias_node: Any = None


def _producer(
    node: Any, inits: Mapping[str, Any], uses: Mapping[str, list[Any]]
) -> _Producer | None:
    """The weight whose output channels ``node`` produces, if pruning them is possible."""
    if node.op_type == "Conv":
        if _attr(node, "group", 1) != 1 or node.input[1] not in inits:
            return None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        return _Producer(node, node.input[1], 0, bias)
    if node.op_type == "Gemm":
        if node.input[1] not in inits or _attr(node, "transA", 0):
            return None
        axis = 0 if _attr(node, "transB", 0) else 1
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias in inits and len(inits[bias].dims) != 1:
            return None
        return _Producer(node, node.input[1], axis, bias)
    if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
        prod = _Producer(node, node.input[1], 1, None)
        after = uses.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add":
            other = [n for n in after[0].input if n != node.output[0]]
            dims = list(inits[other[0]].dims) if len(other) == 1 and other[0] in inits else []
            if dims and (len(dims) == 1 or (len(dims) == 2 and dims[0] == 1)):
                prod.bias, prod.bias_node = other[0], after[0]
        return prod
    return None


def _consumer(
    start: Any, inits: Mapping[str, Any], uses: Mapping[str, list[Any]], outputs: set[str]
) -> tuple[Any, int, bool] | None:
    """The next weighted node fed by ``start``'s channels: (node, input axis, flattened)."""
    tensor = start.output[0]
    flattened = False
    while True:
        if tensor in outputs:
            return None
        users = uses.get(tensor, [])
        if len(users) != 1:
            return None
        node = users[0]
        if node.op_type in _CHANNEL_PRESERVING:
            tensor = node.output[0]
            continue
        if node.op_type == "Flatten" and _attr(node, "axis", 1) == 1:
            flattened = True
            tensor = node.output[0]
            continue
        if node.input[0] != tensor or len(node.input) < 2 or node.input[1] not in inits:
            return None
        if node.op_type == "Conv" and not flattened and _attr(node, "group", 1) == 1:
            return node, 1, False
        if node.op_type == "Gemm" and not _attr(node, "transA", 0):
            return node, 1 if _attr(node, "transB", 0) else 0, flattened
        if node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
            return node, 0, flattened
        return None


def prune_channels(
    src: Path, dst: Path, *, fraction: float = 0.25, multiple_of: int = 16
) -> TransformResult:
    """Remove the ``fraction`` of output channels with the smallest L2 norm, layer by layer.

    The number of channels kept is rounded to the nearest multiple of ``multiple_of``
    (layers of at most that many channels are not rounded): ONNX Runtime's blocked
    (NCHWc) convolution kernels work on 16 channels at a time with AVX-512 and 8 with
    AVX2, and a count off the block runs slower than the unpruned layer (measured: a
    32/64-channel CNN pruned to 28/56 channels ran at 0.78x its fp32 throughput, at
    32/48 at 1.18x, at 16/32 at 2.6x).

    A channel goes only where the graph allows it: a Conv, Gemm or MatMul whose output
    reaches exactly one next Conv/Gemm/MatMul through channel-preserving ops (activations,
    pooling, a Flatten). Both weights shrink, so the model computes less. The last layer
    (whose channels are the model's outputs) is never pruned. No fine-tuning.

    Raises:
        InvalidInputError: ``fraction`` is not in [0, 1).
    """
    import numpy as np
    from onnx import numpy_helper

    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"Channel fraction must be in [0, 1). Got {fraction} instead.")
    if multiple_of < 1:
        raise InvalidInputError(f"multiple_of must be at least 1. Got {multiple_of} instead.")
    model = _load(src)
    outputs = {o.name for o in model.graph.output}
    removed: dict[str, list[int]] = {}
    for node in list(model.graph.node):
        inits = _initializers(model)
        uses = _uses(model)
        prod = _producer(node, inits, uses)
        if prod is None or len(uses.get(prod.weight, [])) != 1:
            continue
        found = _consumer(prod.bias_node or node, inits, uses, outputs)
        if found is None:
            continue
        nxt, in_axis, flattened = found
        if len(uses.get(nxt.input[1], [])) != 1:
            continue
        w = numpy_helper.to_array(inits[prod.weight])
        n_out = w.shape[prod.out_axis]
        keep_n = max(1, n_out - math.floor(n_out * fraction))
        if n_out > multiple_of:
            keep_n = max(multiple_of, multiple_of * math.floor(keep_n / multiple_of + 0.5))
        if keep_n == n_out:
            continue
        norms = np.sqrt((np.moveaxis(w, prod.out_axis, 0).reshape(n_out, -1) ** 2).sum(axis=1))
        keep = np.sort(np.argsort(-norms, kind="stable")[:keep_n])
        w2 = numpy_helper.to_array(inits[nxt.input[1]])
        n_in = w2.shape[in_axis]
        if n_in % n_out:
            continue
        block = n_in // n_out if flattened else 1
        if block != 1 and not flattened:
            continue
        cols = (keep[:, None] * block + np.arange(block)[None, :]).reshape(-1)
        inits[prod.weight].CopyFrom(
            numpy_helper.from_array(np.take(w, keep, axis=prod.out_axis), prod.weight)
        )
        if prod.bias is not None and prod.bias in inits:
            b = numpy_helper.to_array(inits[prod.bias])
            inits[prod.bias].CopyFrom(numpy_helper.from_array(b[..., keep], prod.bias))
        inits[nxt.input[1]].CopyFrom(
            numpy_helper.from_array(np.take(w2, cols, axis=in_axis), nxt.input[1])
        )
        removed[node.name or prod.weight] = [int(n_out), int(keep_n)]
    # intermediate shapes changed: let ONNX Runtime infer them again
    del model.graph.value_info[:]
    _save(model, dst)
    details = {"layers": removed, "layers_pruned": len(removed)}
    params = {"fraction": fraction, "multiple_of": multiple_of}
    return TransformResult(dst, "prune-channels", params, details)
