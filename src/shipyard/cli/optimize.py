"""``shipyard optimize REF --data VAL [--max-drop 0.01] [--objective ...] [--techniques ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli import _output as out

_TECHNIQUES = (
    "ort-graph",
    "fp16",
    "int8-dynamic",
    "int8-static",
    "prune",
    "prune-channels",
    "prune+int8",
    "prune-channels+int8",
)
"""As ``shipyard.workflows.optimize.TECHNIQUES`` (not imported, so --help stays light)."""


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def render_optimize(result: Any) -> None:
    """Print one row per variant (fp32 first), then the best and what was registered."""
    metric = result.metric
    rows = []
    for v in [result.baseline, *result.variants]:
        f = v.figures or {}
        b1, b32 = f.get("batch1", {}), f.get("batch32", {})
        rows.append(
            (
                v.name,
                v.status,
                _num(f.get("size_bytes", 0) / 1024 if f else None, ".1f"),
                _num(f.get("load_ms"), ".1f"),
                _num(b1.get("p50_ms"), ".3f"),
                _num(b1.get("p99_ms"), ".3f"),
                _num(b32.get("p50_ms"), ".2f"),
                _num(b32.get("p99_ms"), ".2f"),
                _num(b32.get("throughput_rps"), ".0f"),
                _num(f.get("quality", {}).get(metric), ".4f"),
                _num(v.delta, "+.4f"),
                _num(f.get("parity", {}).get("max_abs_error"), ".2g"),
                v.ref or (v.reason or ""),
            )
        )
    out.table(
        f"{result.ref}: variants on {result.n_rows} rows, {result.threads} thread(s), "
        f"gate: {metric} drop <= {result.max_drop:g}",
        [
            "variant",
            "status",
            "KiB",
            "load ms",
            "b1 p50",
            "b1 p99",
            "b32 p50",
            "b32 p99",
            "rows/s b32",
            metric,
            "delta",
            "max|Δ|",
            "version / reason",
        ],
        rows,
    )
    if result.best is None:
        click.echo("no variant passed the gate")
    else:
        click.echo(
            f"best by {result.objective}: {result.best} ({result.best_ref or 'not registered'}), "
            f"{result.speedup:.2f}x fp32"
        )
    if result.promoted:
        click.echo(f"alias {result.promoted!r} now points at {result.best_ref}")
    if result.report_path:
        click.echo(f"report: {result.report_path}")


@click.command()
@click.argument("ref")
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="Labelled validation data."
)
@click.option("--target", default=None, help="Label column (CSV/Parquet) or array (.npz; y).")
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0),
    default=0.01,
    show_default=True,
    help="Largest quality drop, in absolute points of the metric (0.01 = 1 accuracy point).",
)
@click.option(
    "--objective",
    type=click.Choice(["latency", "throughput", "size"]),
    default="throughput",
    show_default=True,
    help="What picks the best passing variant.",
)
@click.option(
    "--techniques",
    default=",".join(_TECHNIQUES),
    show_default=True,
    help="Comma-separated technique families.",
)
@click.option(
    "--calibration",
    default="minmax,entropy,percentile",
    show_default=True,
    help="Calibration methods for static int8.",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--promote", default=None, help="Point this alias at the best passing variant.")
@click.option("--no-register", is_flag=True, help="Measure only; register nothing.")
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="Also write the HTML here."
)
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def optimize(
    ctx: click.Context,
    ref: str,
    data: Path,
    target: str | None,
    max_drop: float,
    objective: str,
    techniques: str,
    calibration: str,
    threads: int,
    promote: str | None,
    no_register: bool,
    report: Path | None,
    json_out: bool,
) -> None:
    """Build fp16/int8/pruned/graph-optimized variants of REF, measure them and gate quality."""
    from shipyard.api import optimize as run

    state = ctx.find_root().obj
    as_json = json_out or state.json
    enabled = not as_json and not state.quiet
    with out.progress("measuring", None, enabled) as bar:
        result = run(
            ref,
            data,
            target=target,
            max_drop=max_drop,
            objective=objective,
            techniques=[t.strip() for t in techniques.split(",") if t.strip()],
            calibration_methods=[m.strip() for m in calibration.split(",") if m.strip()],
            threads=threads,
            promote=promote,
            register=not no_register,
            report=report,
            progress=(lambda what, done, total: bar.update(done, total, f"measured {what}"))
            if enabled
            else None,
            settings=state.settings(),
        )
    if as_json:
        out.emit_json(result.summary())
        return
    render_optimize(result)
