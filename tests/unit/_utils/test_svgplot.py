"""Inline SVG charts: every point drawn and marked, names escaped, empty data said so."""

from __future__ import annotations

import math
import re

from shipyard._utils.svgplot import bar_chart, heatmap, line_chart


def test_line_chart_marks_every_finite_point_and_escapes_names() -> None:
    svg = line_chart(
        "p",
        {"<v1>": [(0, 1.0), (1, 2.0), (2, math.nan)], "v2": [(0, 0.5)]},
        title="t",
        x_label="x",
        y_label="y",
    )
    assert svg.count('class="point"') == 3  # NaN is not drawn
    assert "&lt;v1&gt;" in svg and "<v1>" not in svg
    assert re.findall(r'data-y="([^"]+)"', svg) == ["1", "2", "0.5"]


def test_empty_charts_say_so() -> None:
    assert 'class="empty"' in line_chart("p", {}, title="t", x_label="x", y_label="y")
    assert 'class="empty"' in bar_chart("b", [], [], title="t", y_label="y")
    assert 'class="empty"' in heatmap("h", [], [], [], title="t", x_label="x", y_label="y")


def test_bars_flag_and_heatmap_cells() -> None:
    bars = bar_chart("b", ["a", "b"], [0.1, 0.3], title="t", y_label="y", flagged=[False, True])
    assert bars.count('class="point"') == 2 and "#d62728" in bars
    cells = heatmap(
        "h", [[3, 1], [0, 4]], ["0", "1"], ["0", "1"], title="t", x_label="p", y_label="t"
    )
    assert re.findall(r'data-value="([^"]+)"', cells) == ["3", "1", "0", "4"]
