"""Small inline-SVG charts for self-contained HTML reports (no script, no network).

Every data point is an element with ``class="point"`` and ``data-x``/``data-y`` (or
``data-value``), so a browser test can count what was drawn. Values are escaped.

Imports: stdlib only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence

__all__ = ["bar_chart", "heatmap", "line_chart", "scatter"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_W, _H, _PAD = 640, 300, 56


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _span(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    return lo, hi


def _frame(plot_id: str, title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg id="{_esc(plot_id)}" class="plot" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg" role="img">',
        f"<title>{_esc(title)}</title>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fff"/>',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<line x1="{_PAD}" y1="{_PAD / 2}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<text x="{_W / 2}" y="{_H - 12}" font-size="12" text-anchor="middle">'
        f"{_esc(x_label)}</text>",
        f'<text x="14" y="{_H / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_H / 2})">{_esc(y_label)}</text>',
    ]


def _axes(
    plot_id: str,
    title: str,
    x_label: str,
    y_label: str,
    bounds: tuple[float, float, float, float],
    x_format: str,
) -> tuple[list[str], Callable[[float], float], Callable[[float], float]]:
    """The frame with five ticks on each axis, and the data-to-pixel maps of ``bounds``
    (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = bounds

    def px(x: float) -> float:
        return _PAD + (x - x0) / (x1 - x0) * (_W - 2 * _PAD)

    def py(y: float) -> float:
        return _H - _PAD - (y - y0) / (y1 - y0) * (_H - 1.5 * _PAD)

    parts = _frame(plot_id, title, x_label, y_label)
    for i in range(5):
        tx, ty = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(
            f'<text x="{px(tx):.1f}" y="{_H - _PAD + 16}" font-size="10" '
            f'text-anchor="middle">{_esc(x_format.format(tx))}</text>'
        )
        parts.append(
            f'<text x="{_PAD - 6}" y="{py(ty) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{ty:.4g}</text>'
        )
    return parts, px, py


def line_chart(
    plot_id: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_format: str = "{:.3g}",
) -> str:
    """Lines with a marker per point, one colour per series, and a legend."""
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    if not points:
        return f'<p class="empty" id="{_esc(plot_id)}">No data yet for {_esc(title)}.</p>'
    x0, x1 = _span(min(p[0] for p in points), max(p[0] for p in points))
    y0, y1 = _span(min(p[1] for p in points), max(p[1] for p in points))
    parts, px, py = _axes(plot_id, title, x_label, y_label, (x0, x1, y0, y1), x_format)
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        good = [(x, y) for x, y in pts if math.isfinite(y)]
        if len(good) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}"/>')
        for x, y in good:
            parts.append(
                f'<circle class="point" data-series="{_esc(name)}" data-x="{x:.6g}" '
                f'data-y="{y:.6g}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
                f"<title>{_esc(name)}: {y:.4g}</title></circle>"
            )
        parts.append(
            f'<text x="{_W - _PAD + 4}" y="{_PAD / 2 + 14 * (k + 1)}" font-size="11" '
            f'fill="{color}">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def scatter(
    plot_id: str,
    points: Sequence[tuple[str, float, float, str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """Labelled points: (label, x, y, colour) each; the x axis starts at 0."""
    good = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    if not good:
        return f'<p class="empty" id="{_esc(plot_id)}">No data yet for {_esc(title)}.</p>'
    x0, x1 = _span(0.0, max(p[1] for p in good) * 1.1)
    y0, y1 = _span(min(p[2] for p in good), max(p[2] for p in good))
    pad = (y1 - y0) * 0.1
    bounds = (x0, x1, y0 - pad, y1 + pad)
    parts, px, py = _axes(plot_id, title, x_label, y_label, bounds, "{:.3g}")
    for label, x, y, color in good:
        parts.append(
            f'<circle class="point" data-label="{_esc(label)}" data-x="{x:.6g}" '
            f'data-y="{y:.6g}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="6" fill="{_esc(color)}">'
            f"<title>{_esc(label)}: {x:.4g}, {y:.4g}</title></circle>"
        )
        parts.append(
            f'<text x="{px(x) + 8:.1f}" y="{py(y) - 8:.1f}" font-size="10">{_esc(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(
    plot_id: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_label: str,
    threshold: float | None = None,
    flagged: Sequence[bool] | None = None,
) -> str:
    """Vertical bars (red where ``flagged``), with an optional dashed threshold line."""
    if not labels:
        return f'<p class="empty" id="{_esc(plot_id)}">No data yet for {_esc(title)}.</p>'
    finite = [v for v in values if math.isfinite(v)]
    top = max([*finite, threshold or 0.0, 1e-9])
    width = (_W - 2 * _PAD) / len(labels)
    parts = _frame(plot_id, title, "", y_label)

    def py(y: float) -> float:
        return _H - _PAD - y / top * (_H - 1.5 * _PAD)

    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        v = value if math.isfinite(value) else 0.0
        color = "#d62728" if flagged and flagged[i] else PALETTE[0]
        x = _PAD + i * width + width * 0.1
        parts.append(
            f'<rect class="point" data-label="{_esc(label)}" data-value="{value:.6g}" '
            f'x="{x:.1f}" y="{py(v):.1f}" width="{width * 0.8:.1f}" '
            f'height="{max(py(0) - py(v), 0.5):.1f}" fill="{color}">'
            f"<title>{_esc(label)}: {value:.4g}</title></rect>"
        )
        if len(labels) <= 30:
            parts.append(
                f'<text x="{x + width * 0.4:.1f}" y="{_H - _PAD + 14}" font-size="9" '
                f'text-anchor="middle">{_esc(label)[:10]}</text>'
            )
    if threshold is not None:
        parts.append(
            f'<line x1="{_PAD}" y1="{py(threshold):.1f}" x2="{_W - _PAD}" '
            f'y2="{py(threshold):.1f}" stroke="#d62728" stroke-dasharray="4 3"/>'
        )
    parts.append(f'<text x="{_PAD - 6}" y="{py(top) + 4:.1f}" font-size="10" text-anchor="end">')
    parts.append(f"{top:.3g}</text></svg>")
    return "\n".join(parts)


def heatmap(
    plot_id: str,
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """A grid of cells shaded by value, each labelled with its count."""
    if not matrix:
        return f'<p class="empty" id="{_esc(plot_id)}">No data yet for {_esc(title)}.</p>'
    n_rows, n_cols = len(matrix), len(matrix[0])
    top = max((v for row in matrix for v in row), default=0) or 1
    cw, ch = (_W - 2 * _PAD) / n_cols, (_H - 1.5 * _PAD) / n_rows
    parts = _frame(plot_id, title, x_label, y_label)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            shade = int(255 - 200 * (v / top))
            x, y = _PAD + j * cw, _PAD / 2 + i * ch
            parts.append(
                f'<rect class="point" data-row="{_esc(row_labels[i])}" '
                f'data-col="{_esc(col_labels[j])}" data-value="{v:g}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{cw:.1f}" height="{ch:.1f}" fill="rgb({shade},{shade},255)" '
                f'stroke="#fff"/>'
            )
            if n_cols <= 12:
                parts.append(
                    f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" font-size="11" '
                    f'text-anchor="middle">{v:g}</text>'
                )
    for j, label in enumerate(col_labels[:12]):
        parts.append(
            f'<text x="{_PAD + (j + 0.5) * cw:.1f}" y="{_H - _PAD + 14}" font-size="10" '
            f'text-anchor="middle">{_esc(label)}</text>'
        )
    for i, label in enumerate(row_labels[:12]):
        parts.append(
            f'<text x="{_PAD - 4}" y="{_PAD / 2 + (i + 0.5) * ch + 4:.1f}" font-size="10" '
            f'text-anchor="end">{_esc(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
