"""Measure one ONNX file on this machine: size, load time, latency, throughput, quality, parity.

Every file is run the same way (ONNX Runtime at ``ORT_ENABLE_ALL``, the same thread
count), so the fp32 baseline is never weakened relative to a variant.

Imports: workflows.evaluate, workflows._readout, spec, errors; onnxruntime inside functions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import RuntimeLoadError
from shipyard.spec import TaskType
from shipyard.workflows._readout import Readout
from shipyard.workflows.evaluate import _classification, _regression

Arrays = Mapping[str, npt.NDArray[Any]]

QUALITY_METRIC = {TaskType.CLASSIFICATION: "accuracy", TaskType.REGRESSION: "mae"}
"""The metric the gate reads, by task; a drop is a fall in accuracy or a rise in MAE."""
EVAL_BATCH = 256


@dataclass(frozen=True)
class Budget:
    """How long to time each figure.

    Timing runs in ``rounds``; in each round every candidate (fp32 first, then each
    variant, the order rotating) runs up to ``iterations`` times or ``seconds`` per batch
    size. Interleaving means a burst of load from elsewhere on the machine falls on all
    candidates alike instead of on whichever was being timed.
    """

    iterations: int = 200
    seconds: float = 2.0
    warmup: int = 5
    loads: int = 3
    rounds: int = 5


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session at full online optimization with ``threads`` threads.

    Raises:
        RuntimeLoadError: the file does not load.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RuntimeLoadError(
            f"Model {str(path)!r} must load in ONNX Runtime. It failed: {exc}"
        ) from exc


def _rows(inputs: Arrays) -> int:
    return len(next(iter(inputs.values())))


def _slice(inputs: Arrays, start: int, stop: int) -> dict[str, npt.NDArray[Any]]:
    return {k: np.ascontiguousarray(v[start:stop]) for k, v in inputs.items()}


def run_all(sess: Any, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
    """Every output of ``sess`` on all rows of ``inputs``, run in batches."""
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[npt.NDArray[Any]]] = {n: [] for n in names}
    n = _rows(inputs)
    for start in range(0, n, EVAL_BATCH):
        for name, value in zip(
            names, sess.run(names, _slice(inputs, start, start + EVAL_BATCH)), strict=True
        ):
            parts[name].append(np.asarray(value))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _feeds(inputs: Arrays, batch: int) -> list[dict[str, npt.NDArray[Any]]]:
    n = _rows(inputs)
    batch = min(batch, n)
    return [_slice(inputs, s, s + batch) for s in range(0, max(1, n - batch + 1), batch)][:64]


def _burst(
    sess: Any, feeds: list[dict[str, npt.NDArray[Any]]], runs: int, seconds: float
) -> tuple[list[float], float]:
    """Wall times of up to ``runs`` runs, and the process CPU seconds they took."""
    times: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    while len(times) < runs and (time.perf_counter() - started < seconds or len(times) < 3):
        t0 = time.perf_counter()
        sess.run(None, feeds[len(times) % len(feeds)])
        times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu


def timings(
    sessions: Mapping[str, Any], inputs: Arrays, budget: Budget, batches: tuple[int, ...] = (1, 32)
) -> dict[str, dict[str, dict[str, float]]]:
    """Latency p50/p99 (ms) and throughput (rows/s) of every session, timed in interleaved rounds.

    Returns:
        ``{name: {"batch1": {...}, "batch32": {...}}}``; ``throughput_rps`` is the median
        over rounds of rows per wall-clock second, ``rows_per_cpu_s`` the same per second
        of process CPU time (steady when other work shares the cores), latencies are
        percentiles of all runs.
    """
    names = list(sessions)
    rounds = max(1, budget.rounds)
    runs = max(1, budget.iterations // rounds)
    seconds = budget.seconds / rounds
    out: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    for batch in batches:
        feeds = _feeds(inputs, batch)
        size = len(next(iter(feeds[0].values())))
        for name in names:
            for i in range(budget.warmup):
                sessions[name].run(None, feeds[i % len(feeds)])
        times: dict[str, list[float]] = {n: [] for n in names}
        rates: dict[str, list[float]] = {n: [] for n in names}
        cpu_rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                got, cpu_s = _burst(sessions[name], feeds, runs, seconds)
                times[name] += got
                rates[name].append(size * len(got) / sum(got))
                cpu_rates[name].append(size * len(got) / max(cpu_s, 1e-9))
        for name in names:
            arr = np.asarray(times[name]) * 1e3
            out[name][f"batch{batch}"] = {
                "p50_ms": float(np.percentile(arr, 50)),
                "p99_ms": float(np.percentile(arr, 99)),
                "throughput_rps": float(np.median(rates[name])),
                "rows_per_cpu_s": float(np.median(cpu_rates[name])),
                "batch": size,
                "runs": len(arr),
            }
    return out


def load_ms(path: Path, threads: int, loads: int) -> float:
    """Median time to create a session for ``path``, in ms."""
    spent = []
    for _ in range(max(1, loads)):
        t0 = time.perf_counter()
        session(path, threads)
        spent.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(spent))


def quality(
    readout: Readout, outputs: dict[str, npt.NDArray[Any]], y: npt.NDArray[Any], target: str
) -> dict[str, Any]:
    """Classification or regression metrics of ``outputs`` against ``y`` (as evaluate does)."""
    if readout.task is TaskType.CLASSIFICATION:
        pred = readout.labels(outputs)
        scores = readout.scores(outputs)
        return _classification(readout, y, pred, [] if scores is None else [scores])
    return _regression(y, readout.values(outputs), target)


def parity(
    readout: Readout, got: dict[str, npt.NDArray[Any]], ref: dict[str, npt.NDArray[Any]]
) -> dict[str, Any]:
    """Max/mean absolute and max relative error of the float outputs, label agreement."""
    per_output: dict[str, dict[str, float]] = {}
    max_abs = mean_abs = max_rel = 0.0
    for name, expected in ref.items():
        if name not in got or expected.dtype.kind != "f":
            continue
        e = expected.astype(np.float64)
        g = got[name].astype(np.float64).reshape(e.shape)
        diff = np.abs(g - e)
        rel = diff / np.maximum(np.abs(e), 1e-6)
        stats = {
            "max_abs_error": float(diff.max(initial=0.0)),
            "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
            "max_rel_error": float(rel.max(initial=0.0)),
        }
        per_output[name] = stats
        max_abs = max(max_abs, stats["max_abs_error"])
        mean_abs = max(mean_abs, stats["mean_abs_error"])
        max_rel = max(max_rel, stats["max_rel_error"])
    out: dict[str, Any] = {
        "max_abs_error": max_abs,
        "mean_abs_error": mean_abs,
        "max_rel_error": max_rel,
        "per_output": per_output,
        "label_agreement": None,
    }
    if readout.task is TaskType.CLASSIFICATION:
        a, b = readout.labels(got), readout.labels(ref)
        out["label_agreement"] = float(np.mean(a == b)) if len(a) else 1.0
    return out


def measure(
    path: Path,
    inputs: Arrays,
    y: npt.NDArray[Any],
    *,
    readout: Readout,
    target: str,
    threads: int,
    budget: Budget,
    reference: dict[str, npt.NDArray[Any]] | None,
) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]], Any]:
    """Size, load time, quality and parity of one file (timing is done by :func:`timings`).

    Returns:
        ``(figures, outputs on inputs, the loaded session)``; the outputs of fp32 are the
        parity reference of the variants.

    Raises:
        RuntimeLoadError: the file does not load.
    """
    figures: dict[str, Any] = {"size_bytes": path.stat().st_size}
    figures["load_ms"] = load_ms(path, threads, budget.loads)
    sess = session(path, threads)
    outputs = run_all(sess, inputs)
    metrics = quality(readout, outputs, y, target)
    figures["quality"] = {
        k: v for k, v in metrics.items() if isinstance(v, float | int) and not isinstance(v, bool)
    }
    figures["parity"] = parity(readout, outputs, reference if reference is not None else outputs)
    return figures, outputs, sess
