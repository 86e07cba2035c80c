"""``shipyard monitor feedback|status``: ground truth in, live quality out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli import _output as out


@click.group()
def monitor() -> None:
    """Feed ground-truth labels and read live quality beside the offline evaluation."""


@monitor.command()
@click.argument("model")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV, JSON-lines or Parquet: label, and request_id (+ row) or key.",
)
@click.option("--json", "json_out", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def feedback(ctx: click.Context, model: str, path: Path, json_out: bool) -> None:
    """Join the labels in --file to MODEL's logged predictions; unknown ids are listed."""
    from shipyard.api import monitor_feedback

    state = ctx.find_root().obj
    result = monitor_feedback(model, path, settings=state.settings())
    if json_out or state.json:
        out.emit_json(result.to_dict())
        return
    click.echo(f"joined {result.accepted} labels to logged predictions of {model}")
    if result.unknown:
        click.echo(f"{len(result.unknown)} labels name no logged prediction:", err=True)
        for item in result.unknown[:20]:
            click.echo(f"  item {item['index']}: {item}", err=True)


def _quality_rows(live: dict[str, Any]) -> list[tuple[str, ...]]:
    keys = (
        "n",
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "roc_auc",
        "mae",
        "rmse",
    )
    rows = []
    for window, q in live.items():
        cells = [window]
        for k in keys:
            v = q.get(k)
            cells.append("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
        rows.append(tuple(cells))
    return rows


@monitor.command()
@click.argument("ref")
@click.option("--window", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--json", "json_out", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, ref: str, window: int, json_out: bool) -> None:
    """Rows logged and labelled, live quality and offline metrics of REF's versions."""
    from shipyard.api import monitor_status

    state = ctx.find_root().obj
    result = monitor_status(ref, window=window, settings=state.settings())
    if json_out or state.json:
        out.emit_json(result)
        return
    for version, v in result["versions"].items():
        out.kv(
            f"{result['model']}:{version}",
            [("logged rows", v["logged"]), ("labelled rows", v["labelled"])],
        )
        out.table(
            "live quality",
            ["window", "n", "accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse"],
            _quality_rows(v["live"]),
        )
        offline = {k: x for k, x in v["offline"].items() if isinstance(x, int | float)}
        if offline:
            out.kv("offline evaluation (registry)", sorted(offline.items()))


@monitor.command()
@click.argument("ref")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The HTML file to write.",
)
@click.option("--json", "json_out", is_flag=True, help="Print what the report shows as JSON.")
@click.pass_context
def report(ctx: click.Context, ref: str, out_path: Path, json_out: bool) -> None:
    """Write an offline HTML report of REF's model: quality, traffic, latency, confusion."""
    from shipyard.api import monitor_report

    state = ctx.find_root().obj
    result = monitor_report(ref, out_path, settings=state.settings())
    if json_out or state.json:
        out.emit_json(result)
        return
    click.echo(
        f"wrote {result['out']} ({result['requests']} requests, {result['labelled']} labelled)"
    )
