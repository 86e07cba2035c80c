"""The self-contained HTML report of an optimize run: tables and inline SVG plots.

No script, no stylesheet or font from the network: the page is one file that opens offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from shipyard._utils.svgplot import bar_chart, scatter

_COLORS = {"baseline": "#1f77b4", "passed": "#2ca02c", "rejected": "#d62728"}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scatter(rows: Sequence[dict[str, Any]], metric: str) -> str:
    points = [
        (
            str(r["name"]),
            float(r["figures"]["batch1"]["p50_ms"]),
            float(r["figures"]["quality"].get(metric, 0.0)),
            _COLORS.get(r["status"], "#7f7f7f"),
        )
        for r in rows
        if r.get("figures")
    ]
    if not points:
        return "<p>No variant was measured.</p>"
    return scatter(
        "plot-quality-latency",
        points,
        title=f"{metric} against batch-1 p50 latency",
        x_label="latency p50 at batch 1 (ms)",
        y_label=metric,
    )


def _bars(rows: Sequence[dict[str, Any]]) -> str:
    measured = [r for r in rows if r.get("figures")]
    if not measured:
        return ""
    return bar_chart(
        "plot-size",
        [str(r["name"]) for r in measured],
        [r["figures"]["size_bytes"] / 1024 for r in measured],
        title="size on disk per variant",
        y_label="KiB",
        flagged=[r["status"] == "rejected" for r in measured],
    )


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}"
    return "-" if value is None else _esc(value)


def render(summary: dict[str, Any]) -> str:
    """The report page for an optimize result given as plain JSON data."""
    metric = summary["metric"]
    rows: list[dict[str, Any]] = [summary["baseline"], *summary["variants"]]
    head = (
        "<tr><th>variant</th><th>status</th><th>size KiB</th><th>load ms</th>"
        "<th>b1 p50 ms</th><th>b1 p99 ms</th><th>b32 p50 ms</th><th>b32 p99 ms</th>"
        f"<th>rows/s (b32)</th><th>{_esc(metric)}</th><th>delta</th><th>max |Δ| vs fp32</th>"
        "<th>note</th></tr>"
    )
    body = []
    for r in rows:
        f = r.get("figures") or {}
        b1, b32 = f.get("batch1", {}), f.get("batch32", {})
        body.append(
            "<tr>"
            f"<td>{_esc(r['name'])}</td><td class='{_esc(r['status'])}'>{_esc(r['status'])}</td>"
            f"<td>{_fmt(f.get('size_bytes', 0) / 1024 if f else None)}</td>"
            f"<td>{_fmt(f.get('load_ms'))}</td>"
            f"<td>{_fmt(b1.get('p50_ms'))}</td><td>{_fmt(b1.get('p99_ms'))}</td>"
            f"<td>{_fmt(b32.get('p50_ms'))}</td><td>{_fmt(b32.get('p99_ms'))}</td>"
            f"<td>{_fmt(b32.get('throughput_rps'))}</td>"
            f"<td>{_fmt(f.get('quality', {}).get(metric))}</td>"
            f"<td>{_fmt(r.get('delta'))}</td>"
            f"<td>{_fmt(f.get('parity', {}).get('max_abs_error'))}</td>"
            f"<td>{_esc(r.get('reason') or '')}</td></tr>"
        )
    best = summary.get("best") or "none passed the gate"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>shipyard optimize: {_esc(summary["ref"])}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.passed {{ color: #2ca02c; }} .rejected {{ color: #d62728; }}
</style></head><body>
<h1>Optimize {_esc(summary["ref"])}</h1>
<p>Gate: {_esc(metric)} may drop by at most {_esc(summary["max_drop"])} (absolute).
Objective: {_esc(summary["objective"])}; best: <b id="best">{_esc(best)}</b>.
Baseline: fp32 at ORT_ENABLE_ALL; {_esc(summary["threads"])} thread(s) for every variant.
Data: {_esc(summary["data"])} ({_esc(summary["n_rows"])} rows).</p>
<h2>Quality against latency</h2>
{_scatter(rows, metric)}
<h2>Size on disk</h2>
{_bars(rows)}
<h2>All figures</h2>
<table id="figures">{head}{"".join(body)}</table>
</body></html>
"""
