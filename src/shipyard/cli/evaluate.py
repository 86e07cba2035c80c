"""``shipyard evaluate REF --data FILE [--target COLUMN]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli import _output as out


def render_evaluation(result: Any) -> None:
    """Print an EvaluationResult as a summary, per-class table and confusion matrix."""
    metrics: dict[str, Any] = result.metrics
    scalars = [(k, f"{v:.4f}") for k, v in metrics.items() if isinstance(v, float | int)]
    out.kv(f"{result.ref}: {result.task} on {result.n_rows} rows", scalars)
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        out.table(
            "per class",
            ["class", "precision", "recall", "f1", "support"],
            [
                (
                    label,
                    f"{m.get('precision', 0.0):.4f}",
                    f"{m.get('recall', 0.0):.4f}",
                    f"{m.get('f1', 0.0):.4f}",
                    m.get("support", ""),
                )
                for label, m in per_class.items()
            ],
        )
    cm = metrics.get("confusion_matrix")
    labels = metrics.get("labels")
    if isinstance(cm, list) and labels and len(labels) <= 20:
        out.table(
            "confusion matrix (rows: true, columns: predicted)",
            ["", *[str(lab) for lab in labels]],
            [(str(lab), *row) for lab, row in zip(labels, cm, strict=False)],
        )


@click.command()
@click.argument("ref")
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="CSV, Parquet or .npz file."
)
@click.option(
    "--target", default=None, help="The label column (CSV/Parquet) or array (.npz; default y)."
)
@click.option("--no-store", is_flag=True, help="Do not save the metrics on the version.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def evaluate(
    ctx: click.Context, ref: str, data: Path, target: str | None, no_store: bool, json_out: bool
) -> None:
    """Measure REF's quality on a labelled dataset (accuracy/precision/recall/F1 or MAE/RMSE/R²)."""
    from shipyard.api import evaluate as run

    state = ctx.find_root().obj
    result = run(ref, data, target=target, store=not no_store, settings=state.settings())
    if json_out or state.json:
        out.emit_json(result)
        return
    render_evaluation(result)
    if not no_store:
        click.echo(f"metrics stored on {result.ref}")
