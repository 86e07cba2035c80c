"""Parity: the source model and its ONNX export, run on the same inputs, must agree.

Each float output is compared with numpy's allclose rule ``|got - expected| <= atol +
rtol * |expected|``; a classifier's label output must agree on every row. The result is a
:class:`~shipyard.spec.ParityReport`; a failure raises ParityCheckFailed unless the caller
allows the mismatch.

Imports: spec, errors. numpy and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import ConversionError, InvalidInputError, ParityCheckFailed
from shipyard.spec import DType, ParityReport, Signature, TaskSchema

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "N_GENERATED_ROWS",
    "check_parity",
    "generate_inputs",
    "run_onnx",
    "smoke_test",
]

N_GENERATED_ROWS = 16
"""Rows generated for a dynamic batch axis when the caller gives no sample."""
_DYNAMIC_DIM = 4
"""Size used for any other dynamic axis (sequence length, image side) in generated inputs."""
_MAX_WORST = 5
_HINT = "Pass --allow-mismatch to register anyway, or raise --atol/--rtol"


def generate_inputs(
    signature: Signature, *, n_rows: int = N_GENERATED_ROWS, seed: int = 0
) -> dict[str, npt.NDArray[Any]]:
    """Random inputs fitting ``signature``: normal floats, small non-negative integers.

    A dynamic axis 0 gets ``n_rows``; other dynamic axes get a small size.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, npt.NDArray[Any]] = {}
    for spec in signature.inputs:
        shape = tuple(
            (n_rows if i == 0 else _DYNAMIC_DIM) if d is None else d
            for i, d in enumerate(spec.shape)
        )
        if spec.dtype in (DType.FP16, DType.FP32, DType.FP64):
            out[spec.name] = rng.normal(size=shape).astype(spec.dtype.to_numpy())
        elif spec.dtype is DType.BOOL:
            out[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif spec.dtype is DType.BYTES:
            out[spec.name] = np.full(shape, "a", dtype=object)
        else:
            out[spec.name] = rng.integers(0, 8, size=shape).astype(spec.dtype.to_numpy())
    return out


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises pybind11 exception types
        raise ConversionError(
            f"The exported model must load in onnxruntime. Got: {str(exc).splitlines()[0]}"
        ) from exc


def run_onnx(path: Path, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """Run ``path`` once under onnxruntime (CPU) and return its outputs by name.

    Raises:
        ConversionError: the model does not load or fails on these inputs.
    """
    import numpy as np

    session = _session(path)
    feed = {}
    for meta in session.get_inputs():
        if meta.name not in inputs:
            raise InvalidInputError(
                f"Sample inputs must include {meta.name!r}. Got {sorted(inputs)} instead."
            )
        value = np.asarray(inputs[meta.name])
        if meta.type == "tensor(float)" and value.dtype != np.float32:
            value = value.astype(np.float32)
        feed[meta.name] = value
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, feed)
    except Exception as exc:  # onnxruntime raises pybind11 exception types
        raise ConversionError(
            f"The exported model must run in onnxruntime. Got: {str(exc).splitlines()[0]}"
        ) from exc
    return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def _rows(inputs: Mapping[str, Any]) -> int:
    first = next(iter(inputs.values()), None)
    shape: tuple[int, ...] = tuple(getattr(first, "shape", ()))
    return int(shape[0]) if shape else 1


def smoke_test(
    path: Path, signature: Signature, *, sample: Mapping[str, Any] | None = None
) -> ParityReport:
    """Prove a model with no source loads and runs; parity is skipped ("no source model").

    Raises:
        ConversionError: the model does not load or run.
    """
    inputs = dict(sample) if sample is not None else generate_inputs(signature)
    run_onnx(path, inputs)
    return ParityReport(
        passed=True,
        atol=0.0,
        rtol=0.0,
        n_samples=_rows(inputs),
        max_abs_error=0.0,
        max_rel_error=0.0,
        sample_source="user" if sample is not None else "generated",
        skipped_reason="no source model",
    )


def _is_text(arr: npt.NDArray[Any]) -> bool:
    return arr.dtype.kind in "OSU"


def _labels_equal(expected: npt.NDArray[Any], got: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    import numpy as np

    e, g = expected.reshape(-1), got.reshape(-1)
    if _is_text(e) or _is_text(g):
        return np.asarray(e.astype(str) == g.astype(str))
    return np.asarray(e == g)


def check_parity(
    reference: Callable[[Mapping[str, npt.NDArray[Any]]], Mapping[str, npt.NDArray[Any]]],
    onnx_path: Path,
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    task: TaskSchema | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    allow_mismatch: bool = False,
    sample_source: Literal["user", "generated"] = "generated",
) -> ParityReport:
    """Compare ``reference(inputs)`` with the ONNX model's outputs on the same inputs.

    Args:
        reference: The source model as a function of named inputs to named outputs. Only
            outputs it returns are compared.
        onnx_path: The exported model.
        inputs: Named sample arrays.
        task: The task schema; its ``label_output`` is compared by label agreement.
        atol: Absolute tolerance.
        rtol: Relative tolerance.
        allow_mismatch: Return a failed report instead of raising.
        sample_source: Whether ``inputs`` came from the user or were generated.

    Returns:
        The report; ``passed`` is False only when ``allow_mismatch`` is set.

    Raises:
        ParityCheckFailed: an output differs beyond tolerance (``details["parity"]`` holds
            the report).
        ConversionError: the ONNX model does not run, or the outputs do not line up.
    """
    import numpy as np

    if atol < 0 or rtol < 0:
        raise InvalidInputError(f"atol and rtol must be >= 0. Got {atol} and {rtol} instead.")
    got_all = run_onnx(onnx_path, inputs)
    expected_all = {k: np.asarray(v) for k, v in reference(inputs).items()}
    label_output = task.label_output if task is not None else None

    per_output: dict[str, dict[str, float]] = {}
    candidates: list[tuple[tuple[int, float], dict[str, Any]]] = []
    max_abs = max_rel = 0.0
    agreement: float | None = None
    failed: list[str] = []
    for name, expected in expected_all.items():
        if name not in got_all:
            raise ConversionError(
                f"The ONNX model must have an output {name!r}. Got {sorted(got_all)} instead."
            )
        got = got_all[name]
        if expected.size != got.size:
            raise ConversionError(
                f"Output {name!r} must have {expected.size} elements like the source model. "
                f"Got shape {got.shape} instead of {expected.shape}."
            )
        if name == label_output or _is_text(expected) or _is_text(got):
            equal = _labels_equal(expected, got)
            frac = float(equal.mean()) if equal.size else 1.0
            agreement = frac if agreement is None else min(agreement, frac)
            per_output[name] = {"label_agreement": frac}
            if frac < 1.0:
                failed.append(name)
                for idx in np.flatnonzero(~equal)[:_MAX_WORST]:
                    item = {
                        "output": name,
                        "index": int(idx),
                        "expected": _plain(expected.reshape(-1)[idx]),
                        "got": _plain(got.reshape(-1)[idx]),
                        "abs_error": None,
                    }
                    candidates.append(((1, float("inf")), item))
            continue
        e = expected.reshape(-1).astype(np.float64)
        g = got.reshape(-1).astype(np.float64)
        abs_err = np.abs(g - e)
        nan_mismatch = np.isnan(e) != np.isnan(g)
        abs_err = np.where(np.isnan(e) & np.isnan(g), 0.0, abs_err)
        abs_err = np.where(nan_mismatch, np.inf, abs_err)
        allowed = atol + rtol * np.abs(np.nan_to_num(e))
        rel_err = abs_err / np.maximum(np.abs(np.nan_to_num(e)), np.finfo(np.float64).tiny)
        out_abs = float(abs_err.max()) if abs_err.size else 0.0
        out_rel = float(rel_err.max()) if rel_err.size else 0.0
        n_bad = int((abs_err > allowed).sum())
        per_output[name] = {
            "max_abs_error": out_abs,
            "max_rel_error": out_rel,
            "mismatched": float(n_bad),
        }
        max_abs, max_rel = max(max_abs, out_abs), max(max_rel, out_rel)
        if n_bad:
            failed.append(name)
        # out-of-tolerance elements first, each group by absolute error
        order = np.lexsort((abs_err, abs_err > allowed))[::-1]
        for idx in order[:_MAX_WORST]:
            if abs_err[idx] == 0:
                break
            item = {
                "output": name,
                "index": int(idx),
                "expected": float(e[idx]),
                "got": float(g[idx]),
                "abs_error": float(abs_err[idx]),
            }
            bad = 1 if abs_err[idx] > allowed[idx] else 0
            candidates.append(((bad, float(abs_err[idx])), item))
    candidates.sort(key=lambda c: c[0], reverse=True)
    report = ParityReport(
        passed=not failed,
        atol=atol,
        rtol=rtol,
        n_samples=_rows(inputs),
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        label_agreement=agreement,
        per_output=per_output,
        worst=tuple(item for _, item in candidates[:_MAX_WORST]),
        sample_source=sample_source,
    )
    if failed and not allow_mismatch:
        raise ParityCheckFailed(
            _failure_message(report, failed),
            hint=_HINT,
            details={"parity": report.model_dump(mode="json")},
        )
    return report


def _plain(value: Any) -> Any:
    item = value.item() if hasattr(value, "item") else value
    return item if isinstance(item, int | float | bool) else str(item)


def _failure_message(report: ParityReport, failed: list[str]) -> str:
    worst = report.worst[0] if report.worst else None
    if worst is not None and worst.get("abs_error") is None:
        return (
            f"ONNX labels must match the source model on every row. Got agreement "
            f"{report.label_agreement:.3f} on output {worst['output']!r} (first at row "
            f"{worst['index']}: expected {worst['expected']!r}, got {worst['got']!r})."
        )
    if worst is None:  # pragma: no cover - a failed numeric output always has a worst element
        return f"ONNX outputs {failed} must match the source model."
    return (
        f"ONNX output {worst['output']!r} must match the source model within "
        f"atol={report.atol:g} + rtol={report.rtol:g}*|expected|. Got element "
        f"{worst['index']}: expected {worst['expected']:.6g}, got {worst['got']:.6g} "
        f"(abs error {worst['abs_error']:.3g})."
    )
