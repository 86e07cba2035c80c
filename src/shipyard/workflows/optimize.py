"""optimize: build variants of a registered fp32 model, measure them, gate them, register them.

Each variant (offline graph optimization, fp16, int8 dynamic and static, pruning and
their combinations) is measured in the same run as the fp32 baseline, which runs at ONNX
Runtime's full online optimization with the same thread count. A variant whose quality
drops by more than ``max_drop`` is rejected; the others become new versions with lineage,
never moving ``default``.

Imports: registry, convert.transforms, workflows (data, _measure, _optimize_report), spec,
errors.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard._utils.fs import atomic_write_bytes
from shipyard.convert import transforms as tf
from shipyard.errors import ConversionError, InvalidInputError, RuntimeLoadError
from shipyard.spec import Lineage, ModelRef, NewVersion, ParityReport
from shipyard.workflows import _measure
from shipyard.workflows._measure import QUALITY_METRIC, Budget
from shipyard.workflows._optimize_report import render
from shipyard.workflows._readout import Readout
from shipyard.workflows.data import data_format, load_table

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.registry import ModelRegistry, ModelVersion

__all__ = [
    "OBJECTIVES",
    "TECHNIQUES",
    "Budget",
    "OptimizeResult",
    "VariantResult",
    "optimize",
]

logger = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("latency", "throughput", "size")
TECHNIQUES: tuple[str, ...] = (
    "ort-graph",
    "fp16",
    "int8-dynamic",
    "int8-static",
    "prune",
    "prune-channels",
    "prune+int8",
    "prune-channels+int8",
)
"""Technique families; ``int8-static`` expands to one variant per calibration method."""
REPORT_ROLE = "optimize-report"
Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``, called as each variant is built and measured."""


@dataclass
class VariantResult:
    """One candidate and its measured figures.

    Attributes:
        name: E.g. ``"int8-static-minmax"`` (``"fp32"`` for the baseline).
        technique: The transform family.
        parameters: What the transforms were given (recorded as lineage).
        status: ``baseline``, ``passed``, ``rejected`` (quality gate), ``skipped`` (the
            graph allows no such change) or ``failed`` (the transform or load failed).
        figures: size_bytes, load_ms, batch1/batch32 (p50_ms, p99_ms, throughput_rps),
            quality (the metrics), parity (vs fp32); empty when not measured.
        delta: The quality metric minus fp32's (accuracy: negative is worse; MAE:
            positive is worse).
        drop: How much worse than fp32, in the metric's absolute units (positive is worse).
        reason: Why it was rejected, skipped or failed.
        ref: ``name:version`` when registered.
    """

    name: str
    technique: str
    parameters: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    figures: dict[str, Any] = field(default_factory=dict)
    delta: float | None = None
    drop: float | None = None
    reason: str | None = None
    ref: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizeResult:
    """The outcome of one optimize run.

    Attributes:
        ref: The fp32 parent, ``name:version``.
        metric: The gated quality metric (``accuracy`` or ``mae``).
        best: Name of the best passing variant by ``objective`` (None: none passed).
        best_ref: Its registered ref.
        speedup: Best variant's figure relative to fp32 by the objective (higher is better).
        promoted: The alias moved to the best variant, if asked.
        report_path: Where the HTML report was written.
    """

    ref: str
    data: str
    n_rows: int
    metric: str
    max_drop: float
    objective: str
    threads: int
    baseline: VariantResult
    variants: list[VariantResult]
    best: str | None = None
    best_ref: str | None = None
    speedup: float | None = None
    promoted: str | None = None
    report_path: str | None = None

    def summary(self) -> dict[str, Any]:
        """Plain JSON data (what ``--json`` prints and the report renders)."""
        import dataclasses

        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Plan:
    name: str
    technique: str
    build: Callable[[Path, Path], tuple[Path, dict[str, Any], dict[str, Any]]]


def _chain(*steps: Callable[[Path, Path], tf.TransformResult]) -> Callable[..., Any]:
    def build(src: Path, work: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        params: dict[str, Any] = {}
        details: dict[str, Any] = {}
        path = src
        for i, step in enumerate(steps):
            res = step(path, work / f"step{i}.onnx")
            params[res.technique] = res.parameters
            details.update(res.details)
            path = res.path
        return path, params, details

    return build


def _plans(
    techniques: Sequence[str],
    calibration: dict[str, npt.NDArray[Any]],
    methods: Sequence[str],
    sparsity: float,
    channel_fractions: Sequence[float],
) -> list[_Plan]:
    def static(method: str) -> Callable[[Path, Path], tf.TransformResult]:
        return lambda s, d: tf.quantize_static(s, d, calibration, method=method)

    def prune(s: Path, d: Path) -> tf.TransformResult:
        return tf.prune_magnitude(s, d, sparsity=sparsity)

    def channels(fraction: float) -> Callable[[Path, Path], tf.TransformResult]:
        return lambda s, d: tf.prune_channels(s, d, fraction=fraction)

    table: dict[str, list[_Plan]] = {
        "ort-graph": [_Plan("ort-graph", "ort-graph", _chain(tf.optimize_graph))],
        "fp16": [_Plan("fp16", "fp16", _chain(tf.to_fp16))],
        "int8-dynamic": [_Plan("int8-dynamic", "int8-dynamic", _chain(tf.quantize_dynamic))],
        "int8-static": [
            _Plan(f"int8-static-{m}", "int8-static", _chain(static(m))) for m in methods
        ],
        "prune": [_Plan(f"prune-{sparsity:g}", "prune", _chain(prune))],
        "prune-channels": [
            _Plan(f"prune-channels-{f:g}", "prune-channels", _chain(channels(f)))
            for f in channel_fractions
        ],
        "prune+int8": [
            _Plan(
                f"prune-{sparsity:g}+int8-static-{methods[0]}",
                "prune+int8",
                _chain(prune, static(methods[0])),
            )
        ],
        "prune-channels+int8": [
            _Plan(
                f"prune-channels-{f:g}+int8-static-{methods[0]}",
                "prune-channels+int8",
                _chain(channels(f), static(methods[0])),
            )
            for f in channel_fractions
        ],
    }
    return [p for t in techniques for p in table[t]]


def _check_args(
    techniques: Sequence[str], objective: str, max_drop: float, methods: Sequence[str]
) -> None:
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown or not techniques:
        raise InvalidInputError(
            f"Techniques must be among {list(TECHNIQUES)}. Got {list(techniques)} instead."
        )
    if objective not in OBJECTIVES:
        raise InvalidInputError(
            f"Objective must be one of {list(OBJECTIVES)}. Got {objective!r} instead."
        )
    if not max_drop >= 0:
        raise InvalidInputError(f"max_drop must be 0 or more. Got {max_drop} instead.")
    bad = [m for m in methods if m not in tf.CALIBRATION_METHODS]
    if bad or not methods:
        raise InvalidInputError(
            f"Calibration methods must be among {list(tf.CALIBRATION_METHODS)}. "
            f"Got {list(methods)} instead."
        )


def _score(v: VariantResult, objective: str) -> float:
    f = v.figures
    if objective == "latency":
        return -float(f["batch1"]["p50_ms"])
    if objective == "throughput":
        return float(f["batch32"]["throughput_rps"])
    return -float(f["size_bytes"])


def _parity_report(figures: dict[str, Any], n_rows: int) -> ParityReport:
    par = figures["parity"]

    def tol(x: float) -> float:
        return float(f"{max(2.0 * x, 1e-6):.2g}")

    return ParityReport(
        passed=True,
        atol=tol(par["max_abs_error"]),
        rtol=tol(par["max_rel_error"]),
        n_samples=n_rows,
        max_abs_error=par["max_abs_error"],
        max_rel_error=par["max_rel_error"],
        label_agreement=par["label_agreement"],
        per_output=par["per_output"],
        sample_source="user",
    )


def _register(
    registry: ModelRegistry,
    parent: ModelVersion,
    v: VariantResult,
    path: Path,
    report: Path,
    n_rows: int,
    actor: str | None,
) -> str:
    import onnx

    m = parent.manifest
    opsets = [o.version for o in onnx.load(str(path), load_external_data=False).opset_import]
    new = NewVersion(
        signature=m.signature,
        task=m.task,
        framework=m.framework,
        framework_version=m.framework_version,
        opset=max(opsets) if opsets else m.opset,
        parity=_parity_report(v.figures, n_rows),
        lineage=Lineage(
            parent_version=parent.version,
            transformation=v.technique,
            parameters={"variant": v.name, **v.parameters},
        ),
    )
    metrics = {"optimize": {"variant": v.name, "delta": v.delta, **v.figures}}
    mv = registry.register(
        parent.name,
        new,
        {"model.onnx": path, REPORT_ROLE: report},
        move_default=False,
        actor=actor,
        metrics=metrics,
        description=f"{v.name} of {parent.ref}",
    )
    return mv.ref


def optimize(
    registry: ModelRegistry,
    ref: str | ModelRef,
    data: Path,
    *,
    target: str | None = None,
    max_drop: float = 0.01,
    objective: str = "throughput",
    techniques: Sequence[str] = TECHNIQUES,
    calibration_methods: Sequence[str] = tf.CALIBRATION_METHODS,
    calibration_rows: int = 256,
    sparsity: float = 0.5,
    channel_fractions: Sequence[float] = (0.25, 0.5),
    threads: int = 1,
    budget: Budget | None = None,
    promote: str | None = None,
    register: bool = True,
    report_path: Path | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> OptimizeResult:
    """Build, measure and gate variants of a registered fp32 version; register the good ones.

    Args:
        registry: Where the version lives and the variants go.
        ref: The fp32 version (``name``, ``name:3``, ``name@alias``).
        data: Labelled validation data (CSV, Parquet, ``.npz``).
        target: Label column (``.npz``: array, default ``y``).
        max_drop: Largest allowed quality drop in absolute points of the metric
            (accuracy for classifiers, MAE for regressors): 0.01 is one point of accuracy.
        objective: ``latency`` (batch-1 p50), ``throughput`` (rows/s at batch 32) or
            ``size`` (bytes on disk) picks the best passing variant.
        techniques: Families from :data:`TECHNIQUES`.
        calibration_methods: For static int8 (the first is used in combinations).
        calibration_rows: Rows of ``data`` (a seeded random sample) used to calibrate.
        sparsity: Share of weights zeroed by unstructured pruning.
        channel_fractions: Shares of channels removed by structured pruning (one
            variant each, alone and with int8).
        threads: ONNX Runtime intra-op threads, the same for fp32 and every variant.
        budget: How long each figure is timed.
        promote: Point this alias at the best passing variant.
        register: Register passing variants (False: measure only).
        report_path: Also write the HTML report here.
        actor: Who (recorded on registrations).
        progress: Called as each variant is built and measured.
        seed: Seed of the calibration sample.

    Returns:
        Every variant's figures and status, the best and what was registered.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidInputError: unknown technique, objective or method; a negative max_drop; a
            task that is neither classification nor regression; no target for a table.
        InvalidData, SignatureMismatch: the data does not fit the model.
        RuntimeLoadError: the fp32 model does not load.
    """
    budget = budget or Budget()
    techniques = list(dict.fromkeys(techniques))
    _check_args(techniques, objective, max_drop, calibration_methods)
    parent = registry.get(ref)
    manifest = parent.manifest
    task = manifest.task.task
    if task not in QUALITY_METRIC:
        raise InvalidInputError(
            f"optimize needs a classification or regression model to gate quality. "
            f"{parent.ref} has task {task.value!r} instead.",
            hint="Register the version with --task classification or --task regression.",
        )
    path = Path(data)
    if target is None:
        if data_format(path) != "npz":
            raise InvalidInputError(
                f"optimize must know the label column of {str(path)!r}. Got no target instead.",
                hint="Pass --target COLUMN (python: target='COLUMN').",
            )
        target = "y"
    inputs, y = load_table(
        path, signature=manifest.signature, target=target, feature_names=manifest.task.feature_names
    )
    assert y is not None  # load_table returns a target array whenever one is named
    n_rows = len(y)
    if n_rows == 0:
        raise InvalidInputError(f"Data file {str(path)!r} must hold at least one row.")
    metric = QUALITY_METRIC[task]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n_rows, size=min(calibration_rows, n_rows), replace=False))
    calibration = {k: np.ascontiguousarray(v[pick]) for k, v in inputs.items()}
    plans = _plans(techniques, calibration, calibration_methods, sparsity, channel_fractions)
    readout = Readout(manifest)
    total = len(plans) + 2
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(what, step, total)

    with tempfile.TemporaryDirectory(prefix="shipyard-optimize-") as tmp:
        work = Path(tmp)
        src = work / "fp32.onnx"
        src.write_bytes(registry.read_artifact(parent))
        kw: dict[str, Any] = {"readout": readout, "target": target, "threads": threads}
        base_figures, ref_out, base_sess = _measure.measure(
            src, inputs, y, budget=budget, reference=None, **kw
        )
        sessions: dict[str, Any] = {"fp32": base_sess}
        tick("fp32")
        base_q = base_figures["quality"][metric]
        sign = 1.0 if metric == "accuracy" else -1.0
        variants: list[VariantResult] = []
        paths: dict[str, Path] = {}
        for plan in plans:
            v = VariantResult(plan.name, plan.technique)
            variants.append(v)
            vdir = work / plan.name.replace("+", "_")
            vdir.mkdir()
            try:
                out, v.parameters, v.details = plan.build(src, vdir)
                if plan.technique.startswith("prune") and _pruned_nothing(v.details):
                    v.status, v.reason = "skipped", "the graph has no weights this can prune"
                else:
                    v.figures, _, sessions[v.name] = _measure.measure(
                        out, inputs, y, budget=budget, reference=ref_out, **kw
                    )
                    paths[v.name] = out
            except (ConversionError, RuntimeLoadError, InvalidInputError) as exc:
                v.status, v.reason = "failed", str(exc)
                logger.warning("Variant %s failed: %s", plan.name, exc)
            tick(plan.name)
        timed = _measure.timings(sessions, inputs, budget)
        sessions.clear()
        tick("latency and throughput")
        baseline = VariantResult("fp32", "fp32", status="baseline", delta=0.0, drop=0.0)
        baseline.figures = {**base_figures, **timed["fp32"]}
        for v in variants:
            if v.name in timed:
                v.figures.update(timed[v.name])
        for v in variants:
            if not v.figures:
                continue
            value = v.figures["quality"][metric]
            v.delta = float(value - base_q)
            v.drop = float(sign * (base_q - value))
            if v.drop > max_drop + 1e-12:
                v.status = "rejected"
                v.reason = f"{metric} dropped {v.drop:.4g} > max_drop {max_drop:g}"
            else:
                v.status = "passed"
        result = OptimizeResult(
            ref=parent.ref,
            data=str(path),
            n_rows=n_rows,
            metric=metric,
            max_drop=max_drop,
            objective=objective,
            threads=threads,
            baseline=baseline,
            variants=variants,
        )
        passed = [v for v in variants if v.status == "passed"]
        if passed:
            best = max(passed, key=lambda v: _score(v, objective))
            result.best = best.name
            base_score, best_score = _score(baseline, objective), _score(best, objective)
            result.speedup = (
                best_score / base_score if objective == "throughput" else base_score / best_score
            )
        report = work / "report.html"
        report.write_text(render(result.summary()), encoding="utf-8")
        if register:
            for v in passed:
                v.ref = _register(registry, parent, v, paths[v.name], report, n_rows, actor)
            result.best_ref = next((v.ref for v in passed if v.name == result.best), None)
        if report_path is not None:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(report_path, report.read_bytes())
            result.report_path = str(report_path)
    if promote is not None and result.best_ref is not None:
        registry.promote(result.best_ref, promote, actor=actor)
        result.promoted = promote
    logger.info(
        "Optimized %s: %d variants, %d passed, best %s",
        parent.ref,
        len(variants),
        len(passed),
        result.best,
    )
    return result


def _pruned_nothing(details: dict[str, Any]) -> bool:
    return bool(details.get("tensors", 1) == 0 or details.get("layers_pruned", 1) == 0)
