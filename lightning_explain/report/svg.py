"""Inline SVG line charts for the HTML report (no plotting library, no external references).

Example:
    >>> svg = line_chart("drift", {"emd_prev": [(0.0, 0.1), (1.0, 0.05)]})
    >>> svg.startswith("<svg") and "emd_prev" in svg
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["line_chart", "nice_ticks"]

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8",
)  # fmt: skip


def nice_ticks(low: float, high: float, count: int = 5, *, min_step: float = 0.0) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``.

    Example:
        >>> nice_ticks(0.0, 1.0)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw))
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10) + 0.0)  # + 0.0: no "-0" label
        value += step
    return ticks


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    width: int = 440,
    height: int = 230,
    x_label: str = "epoch",
) -> str:
    """An SVG chart of ``series`` (name -> ``[(x, y)]``) with axes, a legend and a hidden marker line.

    The ``<svg>`` carries ``data-x0``, ``data-xmin`` and ``data-scale`` so a script can place the marker
    (class ``marker``) at any x: ``x0 + (x - xmin) * scale`` pixels.
    """
    left, right, top, bottom = 44, 12, 22, 36 + 14 * math.ceil(len(series) / 3)
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    xmin, xmax = (min(xs), max(xs)) if xs else (0.0, 1.0)
    ymin, ymax = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if xmax == xmin:
        xmin, xmax = xmin - 0.5, xmax + 0.5
    if ymax == ymin:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    yticks = nice_ticks(ymin, ymax)
    ymin, ymax = min(ymin, yticks[0]), max(ymax, yticks[-1])
    sx, sy = plot_w / (xmax - xmin), plot_h / (ymax - ymin)

    def px(x: float) -> float:
        return left + (x - xmin) * sx

    def py(y: float) -> float:
        return top + plot_h - (y - ymin) * sy

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'data-x0="{left}" data-xmin="{xmin}" data-scale="{sx}">',
        f'<text x="{left}" y="14" font-weight="600">{html.escape(title)}</text>',
    ]
    for tick in yticks:
        y = py(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    whole = all(float(x).is_integer() for x in xs)
    xticks = [t for t in nice_ticks(xmin, xmax, 8, min_step=1.0 if whole else 0.0) if xmin <= t <= xmax]
    for tick in xticks:
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:g}</text>')
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
        f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
        f'<text x="{left + plot_w}" y="{top + plot_h + 26}" text-anchor="end">{html.escape(x_label)}</text>'
    )
    for i, (name, points) in enumerate(series.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(points))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>')
        parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{colour}"/>' for x, y in points)
        lx, ly = left + (i % 3) * (plot_w / 3), top + plot_h + 42 + 14 * (i // 3)
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly - 3}">{html.escape(name)}</text>'
        )
    parts.append(f'<line class="marker" x1="0" x2="0" y1="{top}" y2="{top + plot_h}" style="display:none"/>')
    parts.append("</svg>")
    return "".join(parts)
