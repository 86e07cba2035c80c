"""The self-contained HTML report of an optimize run: tables and inline SVG plots.

No script, no stylesheet or font from the network: the page is one file that opens offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

_COLORS = {"baseline": "#1f77b4", "passed": "#2ca02c", "rejected": "#d62728"}
_W, _H, _PAD = 640, 360, 56


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _scatter(rows: Sequence[dict[str, Any]], metric: str) -> str:
    pts = [r for r in rows if r.get("figures")]
    xs = [float(r["figures"]["batch1"]["p50_ms"]) for r in pts]
    ys = [float(r["figures"]["quality"].get(metric, 0.0)) for r in pts]
    if not pts:
        return "<p>No variant was measured.</p>"
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = min(ys), max(ys)
    span = (y1 - y0) or max(abs(y1) * 0.01, 1e-3)
    y0, y1 = y0 - span * 0.1, y1 + span * 0.1

    def px(x: float) -> float:
        return _PAD + (x - x0) / (x1 - x0) * (_W - 2 * _PAD)

    def py(y: float) -> float:
        return _H - _PAD - (y - y0) / (y1 - y0) * (_H - 2 * _PAD)

    parts = [
        f'<svg id="plot-quality-latency" class="plot" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg" role="img">',
        f"<title>{_esc(metric)} against batch-1 p50 latency</title>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fff"/>',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#333"/>',
    ]
    for t in _ticks(x0, x1):
        parts.append(
            f'<text x="{px(t):.1f}" y="{_H - _PAD + 16}" font-size="11" '
            f'text-anchor="middle">{t:.3g}</text>'
        )
    for t in _ticks(y0, y1):
        parts.append(
            f'<text x="{_PAD - 6}" y="{py(t) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{t:.4g}</text>'
        )
    parts.append(
        f'<text x="{_W / 2}" y="{_H - 12}" font-size="12" text-anchor="middle">'
        "latency p50 at batch 1 (ms)</text>"
    )
    parts.append(
        f'<text x="14" y="{_H / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_H / 2})">{_esc(metric)}</text>'
    )
    for r, x, y in zip(pts, xs, ys, strict=True):
        color = _COLORS.get(r["status"], "#7f7f7f")
        parts.append(
            f'<circle class="point" data-variant="{_esc(r["name"])}" data-x="{x:.6g}" '
            f'data-y="{y:.6g}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="6" fill="{color}">'
            f"<title>{_esc(r['name'])}: {x:.3f} ms, {_esc(metric)} {y:.4f}</title></circle>"
        )
        parts.append(
            f'<text x="{px(x) + 8:.1f}" y="{py(y) - 8:.1f}" font-size="10">{_esc(r["name"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bars(rows: Sequence[dict[str, Any]]) -> str:
    pts = [r for r in rows if r.get("figures")]
    if not pts:
        return ""
    biggest = max(r["figures"]["size_bytes"] for r in pts) or 1
    bar_h, gap, width_px = 22, 8, 860
    left = 20 + 6 * max(len(str(r["name"])) for r in pts)
    height = _PAD + len(pts) * (bar_h + gap)
    parts = [
        f'<svg id="plot-size" class="plot" width="{width_px}" height="{height}" '
        f'viewBox="0 0 {width_px} {height}" xmlns="http://www.w3.org/2000/svg" role="img">',
        "<title>size on disk per variant</title>",
        f'<rect x="0" y="0" width="{width_px}" height="{height}" fill="#fff"/>',
    ]
    for i, r in enumerate(pts):
        size = r["figures"]["size_bytes"]
        width = max(1.0, size / biggest * (width_px - left - 90))
        y = 20 + i * (bar_h + gap)
        color = _COLORS.get(r["status"], "#7f7f7f")
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" font-size="11" text-anchor="end">'
            f"{_esc(r['name'])}</text>"
        )
        parts.append(
            f'<rect class="bar" data-variant="{_esc(r["name"])}" data-size="{size}" x="{left}" '
            f'y="{y}" width="{width:.1f}" height="{bar_h}" fill="{color}"/>'
        )
        parts.append(
            f'<text x="{left + width + 6:.1f}" y="{y + 15}" font-size="11">'
            f"{size / 1024:.1f} KiB</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


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
