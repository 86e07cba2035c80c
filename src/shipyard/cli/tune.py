"""``shipyard tune REF --slo-p99-ms N --concurrency C``: serving settings by measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli import _output as out


def render_tune(result: Any) -> None:
    """Print every candidate tried, then the chosen one."""
    chosen = result.chosen
    out.table(
        f"{result.ref}: {len(result.trials)} candidates at concurrency {result.concurrency}, "
        f"SLO p99 <= {result.slo_p99_ms:g} ms, {result.cores} cores "
        f"({result.elapsed_s:.1f} s of a {result.budget_s:g} s budget)",
        ["phase", "threads", "batch", "wait ms", "req/s", "p50 ms", "p99 ms", "err", "SLO"],
        [
            (
                t.phase,
                t.candidate.intra_op_threads or "auto",
                t.candidate.max_batch_size,
                f"{t.candidate.max_wait_ms:g}",
                f"{t.rps:.0f}",
                f"{t.p50_ms:.2f}",
                f"{t.p99_ms:.2f}",
                t.errors,
                ("yes" if t.meets_slo else "no") + (" *" if t is chosen else ""),
            )
            for t in result.trials
        ],
    )
    if chosen is not None:
        click.echo("* chosen (a candidate measured twice is scored on its mean req/s)")
    if result.skipped:
        click.echo(f"{result.skipped} planned candidate(s) not run: the time budget was spent")


@click.command()
@click.argument("ref")
@click.option(
    "--slo-p99-ms",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="p99 latency objective in milliseconds.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    required=True,
    help="Requests in flight at once (closed-loop load).",
)
@click.option(
    "--budget-s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Wall-clock budget for the whole search.",
)
@click.option(
    "--sample",
    type=click.Path(path_type=Path),
    default=None,
    help="Inputs to send (.npy/.npz; first row); default: made up from the signature.",
)
@click.option("--dry-run", is_flag=True, help="Measure and report, but write nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def tune(
    ctx: click.Context,
    ref: str,
    slo_p99_ms: float,
    concurrency: int,
    budget_s: float,
    sample: Path | None,
    dry_run: bool,
    json_out: bool,
) -> None:
    """Measure threads, batch size and batch wait for REF on this machine under load.

    The best settings that meet the SLO (most req/s with p99 within it) are written into
    the version's serving settings, which `shipyard serve` uses.
    """
    from shipyard.api import tune as run
    from shipyard.errors import SloNotMet

    state = ctx.find_root().obj
    as_json = json_out or state.json
    with out.progress(f"tuning {ref}", None, not (as_json or state.quiet)) as bar:
        result = run(
            ref,
            slo_p99_ms=slo_p99_ms,
            concurrency=concurrency,
            budget_s=budget_s,
            sample_input=sample,
            write=not dry_run,
            progress=bar,
            on_plan=bar.set_total,
            settings=state.settings(),
        )
    if as_json:
        out.emit_json(result.to_dict())
    else:
        render_tune(result)
    if result.chosen is None:
        best = min((t.p99_ms for t in result.trials), default=float("nan"))
        raise SloNotMet(
            f"A candidate must meet p99 <= {slo_p99_ms:g} ms at concurrency {concurrency}. "
            f"The best p99 measured was {best:.2f} ms; nothing was written.",
            hint="Raise --slo-p99-ms, lower --concurrency, or use a faster (e.g. int8) version.",
        )
    if not as_json:
        c = result.chosen.candidate
        verb = "would write" if dry_run else "wrote"
        click.echo(
            f"{verb} on {result.ref}: intra_op_threads={c.intra_op_threads}, "
            f"max_batch_size={c.max_batch_size}, max_wait_ms={c.max_wait_ms:g} "
            f"({result.chosen.rps:.0f} req/s, p99 {result.chosen.p99_ms:.2f} ms)"
        )
