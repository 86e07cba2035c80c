"""``shipyard monitor``: ground truth in; live quality, drift and estimated quality out."""

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


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return ""
    return format(value, spec) if isinstance(value, float) else str(value)


def drift_lines(drift: dict[str, Any]) -> list[tuple[str, ...]]:
    """One table row per test of every feature and prediction column of a drift section."""
    rows: list[tuple[str, ...]] = []
    for part in ("features", "prediction"):
        for r in drift.get(part, []):
            verdict = {True: "DRIFT", False: "ok", None: "n/a"}[r["drifted"]]
            name = r["feature"]
            rows.append(
                (
                    name,
                    r["test"],
                    _fmt(r["statistic"]),
                    _fmt(r["p_value"]),
                    _fmt(r["threshold"]),
                    verdict,
                    str(r["n_current"]),
                )
            )
    return rows


def _render_drift(drift: dict[str, Any]) -> None:
    if drift.get("reference") is None:
        reason = drift.get("error") or f"no reference; set one with `{drift.get('hint')}`"
        out.kv("drift", [("reference", reason)])
        return
    ref = drift["reference"]
    if "features" not in drift:
        out.kv("drift", [("reference", ref.get("source")), ("current", drift.get("note"))])
        return
    out.kv(
        "drift",
        [
            ("reference", f"{ref.get('source')} ({drift['n_reference']} rows)"),
            ("current window", f"{drift['n_current']} newest logged rows"),
            (
                "drifted features",
                f"{len(drift['drifted_features'])} ({drift['share_drifted']:.0%}) "
                + " ".join(drift["drifted_features"]),
            ),
            ("prediction drifted", drift["prediction_drifted"]),
        ],
    )
    out.table(
        None,
        ["feature", "test", "statistic", "p-value", "threshold", "verdict", "n"],
        drift_lines(drift),
    )


def _render_estimated(est: dict[str, Any]) -> None:
    if not est.get("available"):
        return
    keys = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    rows = [("estimated (CBPE)", str(est.get("n", 0)), *(_fmt(est.get(k)) for k in keys))]
    labelled = est.get("labelled")
    if labelled:
        rows.append(
            (
                "estimated on labelled rows",
                str(labelled["n"]),
                *(_fmt(labelled["estimated"].get(k)) for k in keys),
            )
        )
        rows.append(
            (
                "measured on labelled rows",
                str(labelled["n"]),
                *(_fmt(labelled["measured"].get(k)) for k in keys),
            )
        )
    out.table("estimated quality", ["rows", "n", "accuracy", "precision", "recall", "f1"], rows)


@monitor.command("set-reference")
@click.argument("ref")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV, Parquet, .npz or .npy of the model's inputs (its evaluation data, say).",
)
@click.option("--target", default=None, help="A label column in --data to leave out.")
@click.option("--json", "json_out", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def set_reference(
    ctx: click.Context, ref: str, data: Path, target: str | None, json_out: bool
) -> None:
    """Store REF's drift reference: --data's features and the version's predictions on them."""
    from shipyard.api import monitor_set_reference

    state = ctx.find_root().obj
    result = monitor_set_reference(ref, data, target=target, settings=state.settings())
    if json_out or state.json:
        out.emit_json(result)
        return
    click.echo(
        f"stored the drift reference of {result['ref']}: {result['rows']} rows "
        f"({len(result['features'])} features, prediction: "
        f"{result['prediction_output'] or 'none'}) in {result['path']}"
    )


@monitor.command()
@click.argument("ref")
@click.option("--window", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--drift-window",
    default=None,
    type=click.IntRange(1, 10_000_000),
    help="Newest logged rows compared with the reference [default: monitoring.drift_window].",
)
@click.option("--json", "json_out", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(
    ctx: click.Context, ref: str, window: int, drift_window: int | None, json_out: bool
) -> None:
    """Live quality, offline metrics, drift and estimated quality of REF's versions."""
    from shipyard.api import monitor_status

    state = ctx.find_root().obj
    result = monitor_status(
        ref, window=window, drift_window=drift_window, settings=state.settings()
    )
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
        if "estimated" in v:
            _render_estimated(v["estimated"])
        if "drift" in v:
            _render_drift(v["drift"])


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
