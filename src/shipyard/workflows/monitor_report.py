"""``shipyard monitor report``: one offline HTML file with what a person wants to see.

Traffic and latency over time (from the prediction log), live quality over time per
version (from the labels joined so far), the confusion matrix of the newest version, a
table of live against offline metrics, each version's drift per feature against its
reference (PSI and test p-values, with the thresholds, drifted columns in red), and for
classifiers with scores the label-free estimate of accuracy (CBPE) over time beside the
accuracy measured once labels arrived. Plots are inline SVG: the file opens anywhere,
with no network.

Imports: registry, monitoring, _utils, spec.
"""

from __future__ import annotations

import html
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard._utils.fs import atomic_write_text
from shipyard._utils.svgplot import bar_chart, heatmap, line_chart
from shipyard._utils.version import __version__
from shipyard.monitoring.drift import DriftThresholds
from shipyard.monitoring.feedback import FeedbackStore, LabelledRow
from shipyard.monitoring.joined import quality_for_task
from shipyard.monitoring.predlog import iter_requests
from shipyard.monitoring.watch import estimate_series
from shipyard.registry import ModelRegistry
from shipyard.spec import ModelRef, TaskType

if TYPE_CHECKING:
    from shipyard._utils.crypto import KeyProvider
    from shipyard.spec import TaskSchema
from shipyard.workflows.monitor import status

__all__ = ["write_report"]

_BUCKETS = 30


def _edges(t0: float, t1: float) -> tuple[float, float]:
    """Bucket start and width: about ``_BUCKETS`` buckets over the span."""
    width = max((t1 - t0) / _BUCKETS, 1.0)
    return t0, width


def _traffic(root: Path, model: str, keys: KeyProvider | None = None) -> dict[str, Any]:
    stamps: list[tuple[float, float, int, str]] = []
    for req in iter_requests(root, model, keys=keys):
        stamps.append((req["ts"], req["latency_ms"], req["rows"], req["version"]))
    if not stamps:
        return {"requests": {}, "p50": {}, "p99": {}, "t0": 0.0}
    t0, width = _edges(min(s[0] for s in stamps), max(s[0] for s in stamps))
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    lat: dict[int, list[float]] = defaultdict(list)
    for ts, ms, _rows, version in stamps:
        b = int((ts - t0) // width)
        counts[f"v{version}"][b] += 1
        lat[b].append(ms)
    requests = {
        name: [((b * width) / 60, n / width) for b, n in sorted(per.items())]
        for name, per in counts.items()
    }
    p50 = [((b * width) / 60, float(np.percentile(v, 50))) for b, v in sorted(lat.items())]
    p99 = [((b * width) / 60, float(np.percentile(v, 99))) for b, v in sorted(lat.items())]
    return {"requests": requests, "p50": p50, "p99": p99, "t0": t0, "n": len(stamps)}


def _quality_over_time(
    rows: list[LabelledRow], tasks: dict[str, Any], t0: float | None
) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    if not rows:
        return "accuracy", {}
    start = t0 if t0 else min(r.ts for r in rows)
    _, width = _edges(start, max(r.ts for r in rows))
    by: dict[tuple[str, int], list[LabelledRow]] = defaultdict(list)
    for r in rows:
        by[(r.version, int((r.ts - start) // width))].append(r)
    first = next(iter(tasks.values()))
    metric = "rmse" if first.task is TaskType.REGRESSION else "accuracy"
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (version, b), bucket in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        q = quality_for_task(tasks[version], bucket)
        value = q.get(metric)
        if isinstance(value, int | float):
            series[f"v{version}"].append(((b * width) / 60, float(value)))
    return metric, dict(series)


def _table(versions: dict[str, Any]) -> str:
    keys = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "mae", "rmse")
    head = "".join(f"<th>{k}</th>" for k in ("version", "logged", "labelled", *keys))
    body = []
    for v, info in versions.items():
        live = info["live"]["all"]
        offline = info["offline"]
        cells = [f"<td>{html.escape(v)}</td>", f"<td>{info['logged']}</td>"]
        cells.append(f"<td>{info['labelled']}</td>")
        for k in keys:
            lv, ov = live.get(k), offline.get(k)
            text = "" if not isinstance(lv, int | float) else f"{lv:.4f}"
            if isinstance(ov, int | float):
                text += f" <small>(offline {ov:.4f})</small>"
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _estimated_over_time(
    root: Path,
    model: str,
    tasks: dict[str, TaskSchema],
    t0: float | None,
    keys: KeyProvider | None,
) -> dict[str, list[tuple[float, float]]]:
    """CBPE accuracy per time bucket, per classifier version with a scores output."""
    scores_of = {
        v: t.scores_output
        for v, t in tasks.items()
        if t.task is TaskType.CLASSIFICATION and t.scores_output is not None
    }
    if not scores_of:
        return {}
    seen: list[tuple[float, str, Any]] = []
    for req in iter_requests(root, model, keys=keys):
        name = scores_of.get(str(req["version"]))
        values = req["outputs"].get(name) if name is not None else None
        if values is not None:
            seen.append((req["ts"], str(req["version"]), values))
    if not seen:
        return {}
    start = t0 if t0 else min(s[0] for s in seen)
    _, width = _edges(start, max(s[0] for s in seen))
    buckets: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for ts, version, values in seen:
        buckets[(version, int((ts - start) // width))].extend(values)
    out: dict[str, list[tuple[float, float]]] = {}
    for v in sorted({v for v, _ in buckets}, key=int):
        index = sorted(b for ver, b in buckets if ver == v)
        times = [(b * width) / 60 for b in index]
        points = estimate_series(tasks[v], times, [buckets[(v, b)] for b in index])
        if points:
            out[v] = points
    return out


_VERDICT = {True: '<b class="drift">drift</b>', False: "ok", None: "n/a"}


def _drift_table(results: list[dict[str, Any]]) -> str:
    names = ("feature", "test", "statistic", "p-value", "threshold", "verdict")
    head = "".join(f"<th>{k}</th>" for k in names)
    body = []
    for r in results:
        cells = [html.escape(str(r["feature"])), html.escape(str(r["test"]))]
        for k in ("statistic", "p_value", "threshold"):
            cells.append("" if r[k] is None else f"{r[k]:.4g}")
        cells.append(_VERDICT[r["drifted"]])
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _drift_sections(version: str, drift: dict[str, Any]) -> list[str]:
    """A version's drift: PSI and -log10 p-value bars against their thresholds, and a table."""
    title = f"<h2>Drift of version {html.escape(version)} against its reference</h2>"
    if "features" not in drift:
        if drift.get("error") or drift.get("note"):
            why = html.escape(str(drift.get("error") or drift.get("note")))
        else:
            why = f"No reference yet: run <code>{html.escape(str(drift.get('hint')))}</code>."
        return [title, f'<p class="empty" id="drift-{html.escape(version)}">{why}</p>']
    results = [*drift["features"], *drift["prediction"]]
    th = drift["thresholds"]
    psi = [r for r in results if r["test"] == "psi"]
    tests = [r for r in results if r["p_value"] is not None]
    source = html.escape(str(drift["reference"].get("source")))
    flagged = ", ".join(html.escape(f) for f in drift["drifted_features"]) or "none"
    parts = [
        title,
        f"<p>The {drift['n_current']} newest logged rows against {drift['n_reference']} "
        f"reference rows ({source}). Drifted features: {flagged} "
        f"({drift['share_drifted']:.0%}); prediction drifted: "
        f"{_VERDICT[drift['prediction_drifted']]}.</p>",
    ]
    if psi:
        parts.append(
            bar_chart(
                f"plot-drift-{version}",
                [r["feature"] for r in psi],
                [math.nan if r["statistic"] is None else r["statistic"] for r in psi],
                title="PSI per numeric feature and prediction column (dashed: threshold)",
                y_label="PSI",
                threshold=th["psi"],
                flagged=[bool(r["drifted"]) for r in psi],
            )
        )
    if tests:
        alpha = min(th["ks_p_value"], th["chi2_p_value"])
        parts.append(
            bar_chart(
                f"plot-drift-p-{version}",
                [f"{r['feature']} {r['test']}" for r in tests],
                [min(-math.log10(max(r["p_value"], 1e-300)), 300.0) for r in tests],
                title="-log10 p-value of the KS and chi² tests (dashed: the smaller threshold)",
                y_label="-log10 p",
                threshold=-math.log10(alpha),
                flagged=[bool(r["drifted"]) for r in tests],
            )
        )
    parts.append(_drift_table(results))
    return parts


def write_report(
    registry: ModelRegistry,
    store: FeedbackStore,
    root: Path,
    ref: str,
    out: Path,
    *,
    drift_window: int = 10_000,
    thresholds: DriftThresholds | None = None,
) -> dict[str, Any]:
    """Write the report for ``ref``'s model to ``out``; return what it shows (as JSON)."""
    parsed = ModelRef.parse(ref)
    st = status(
        registry, store, parsed, root=root, drift_window=drift_window, thresholds=thresholds
    )
    tasks = {v: registry.get(f"{parsed.name}:{v}").manifest.task for v in st["versions"]}
    traffic = _traffic(root, parsed.name, store.keys)
    rows = store.labelled(parsed.name)
    metric, quality = _quality_over_time(rows, tasks, traffic.get("t0") or None)
    estimated = _estimated_over_time(root, parsed.name, tasks, traffic.get("t0"), store.keys)
    newest = max(st["versions"], key=int)
    cm_info = st["versions"][newest]["live"]["all"]
    cm, labels = cm_info.get("confusion_matrix"), [str(x) for x in cm_info.get("labels", [])]
    sections = [
        "<h2>Live quality against the offline evaluation</h2>",
        _table(st["versions"]),
        "<h2>Quality over time</h2>",
        line_chart(
            "plot-quality",
            quality,
            title=f"live {metric} per version, by prediction time",
            x_label="minutes since the first logged request",
            y_label=metric,
        ),
        "<h2>Traffic</h2>",
        line_chart(
            "plot-traffic",
            traffic["requests"],
            title="requests per second, per version",
            x_label="minutes since the first logged request",
            y_label="requests/s",
        ),
        "<h2>Latency</h2>",
        line_chart(
            "plot-latency",
            {"p50": traffic["p50"], "p99": traffic["p99"]} if traffic["p50"] else {},
            title="request latency (model time)",
            x_label="minutes since the first logged request",
            y_label="ms",
        ),
    ]
    if estimated:
        series: dict[str, list[tuple[float, float]]] = {}
        for v, points in estimated.items():
            series[f"estimated v{v}"] = points
            if metric == "accuracy" and f"v{v}" in quality:
                series[f"measured v{v}"] = quality[f"v{v}"]
        sections += [
            "<h2>Estimated quality (no labels needed) against measured</h2>",
            line_chart(
                "plot-estimated",
                series,
                title="accuracy: estimated from probabilities (CBPE), and measured from labels",
                x_label="minutes since the first logged request",
                y_label="accuracy",
            ),
        ]
    for v, info in st["versions"].items():
        sections += _drift_sections(v, info.get("drift") or {})
    if cm:
        sections += [
            f"<h2>Confusion matrix, version {html.escape(newest)}</h2>",
            heatmap(
                "plot-confusion",
                cm,
                labels,
                labels,
                title="rows: true label, columns: predicted",
                x_label="predicted",
                y_label="true",
            ),
        ]
        per_class = cm_info.get("per_class", {})
        if per_class:
            names = list(per_class)
            f1 = [float(per_class[n].get("f1", math.nan)) for n in names]
            sections.append(bar_chart("plot-f1", names, f1, title="F1 per class", y_label="F1"))
    generated = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>shipyard monitoring: {html.escape(parsed.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 900px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
small {{ color: #777; }} .empty {{ color: #777; font-style: italic; }}
.drift {{ color: #d62728; }}
</style></head><body>
<h1>Monitoring report: {html.escape(parsed.name)}</h1>
<p>Generated {generated} by shipyard {html.escape(__version__)} from
{traffic.get("n", 0)} logged requests and {len(rows)} labelled rows.</p>
{"".join(sections)}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return {"out": str(out), "status": st, "requests": traffic.get("n", 0), "labelled": len(rows)}
