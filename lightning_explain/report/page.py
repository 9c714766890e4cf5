"""The report's HTML: one section per method (probe-image tiles, an epoch slider, its charts), one page per log dir.

The page is self-contained: the grids are ``data:`` URIs stored once in a JSON ``<script>``, and the CSS
(``report.css``) and the script (``report.js``), package data next to this module, are inlined.

Example:
    >>> page = render_html([], "empty")
    >>> page.startswith("<!DOCTYPE html>") and "No logged images found" in page
    True
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from lightning_explain.output.charts import CHARTS
from lightning_explain.report.events import Frame, RunData
from lightning_explain.report.svg import line_chart

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["chart_series", "render_html"]

Series = dict[str, list[tuple[float, float]]]


@cache
def _asset(name: str) -> str:
    """``report.css`` or ``report.js``, read from the package data."""
    return files("lightning_explain.report").joinpath(name).read_text(encoding="utf-8")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _method_of(tag: str, prefixes: Iterable[str]) -> tuple[str, str]:
    """``(prefix, method)`` of an image tag: ``explain/gradcam`` -> ``("explain", "gradcam")``."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if tag.startswith(prefix + "/"):
            return prefix, tag[len(prefix) + 1 :]
    head, _, tail = tag.rpartition("/")
    return head, tail or tag


def chart_series(run: RunData, base: str) -> list[tuple[str, Series]]:
    """The charts of :data:`~lightning_explain.output.charts.CHARTS` that have data under ``base``
    (``{prefix}/{method}``).

    Each as ``(title, {series name: [(epoch or step, value)]})``, the series in name order, NaN/inf left out.
    """
    groups = []
    for chart in CHARTS:
        series: Series = {}
        for name in sorted(chart.names):
            points = run.scalars.get(f"{base}/{chart.kind}/{name}", [])
            finite = [(float(run.step_epoch.get(s, s)), v) for s, v in points if math.isfinite(v)]
            if finite:
                series[name] = finite
        if series:
            groups.append((chart.title, series))
    return groups


def _label(frame: Frame) -> str:
    return f"epoch {frame.epoch} (step {frame.step})" if frame.epoch is not None else f"step {frame.step}"


def _section(run: RunData, tag: str, frames: Sequence[Frame], uid: str, sources: list[str]) -> str:
    """One method's block; the frames' data URIs are appended to ``sources`` (stored once in the page)."""
    prefix, method = _method_of(tag, run.prefixes)
    data = []
    for f in frames:
        sources.append(_data_uri(f.png))
        data.append(
            {
                "label": _label(f),
                "source": len(sources) - 1,
                "rows": f.rows,
                "width": f.size[1],
                "x": f.epoch if f.epoch is not None else f.step,
            }
        )
    last = frames[-1]
    tiles = []
    for r in range(max(len(f.rows) for f in frames)):
        caption = f"probe image #{r}" if last.cut else "whole grid (no layout logged)"
        top, height = last.rows[r] if r < len(last.rows) else (0, 0)
        tiles.append(
            f'<div class="tile"><div class="crop" style="width:{last.size[1]}px;height:{height}px">'
            f'<img alt="{html.escape(tag)} row {r}" style="margin-top:{-top}px"></div>'
            f"<span>{html.escape(caption)}</span></div>"
        )
    charts = "".join(line_chart(title, series) for title, series in chart_series(run, f"{prefix}/{method}"))
    return (
        f'<section class="method" id="{uid}" data-tag="{html.escape(tag)}" '
        f"data-frames='{html.escape(json.dumps(data), quote=True)}'>"
        f"<h3>{html.escape(method)} <span class='note'>({html.escape(tag)}, {len(frames)} logged epochs)</span></h3>"
        f'<div class="controls"><input class="slider" type="range" min="0" max="{len(frames) - 1}" '
        f'value="{len(frames) - 1}" step="1" aria-label="epoch of {html.escape(tag)}">'
        f'<span class="epoch-label">{html.escape(_label(last))}</span></div>'
        f'<div class="tiles">{"".join(tiles)}</div>'
        f'<div class="charts">{charts}</div></section>'
    )


def render_html(runs: Sequence[RunData], title: str, progress: tqdm | None = None) -> str:
    """The report as one HTML string (no external references); ``progress`` advances once per image tag."""
    body = []
    sources: list[str] = []  # every frame's data URI, once; the tiles' <img> get theirs from the script
    epochs: set[int] = set()
    count = 0
    for run in runs:
        parts = []
        for tag, frames in sorted(run.images.items()):
            if frames:
                parts.append(_section(run, tag, frames, f"m{count}", sources))
                epochs.update(f.epoch for f in frames if f.epoch is not None)
                count += 1
            if progress is not None:
                progress.set_postfix_str(f"{run.name}: {tag}", refresh=False)
                progress.update()
        if not parts:
            parts.append('<p class="note">No images in this run.</p>')
        body.append(f"<h2>{html.escape(run.name)}</h2>{''.join(parts)}")
    ordered = sorted(epochs)
    top = ""
    if len(ordered) > 1:
        top = (
            '<div class="controls">All methods: <input id="all-epochs" type="range" min="0" '
            f'max="{len(ordered) - 1}" value="{len(ordered) - 1}" data-epochs=\'{json.dumps(ordered)}\' '
            f'aria-label="epoch of every method"><span id="all-label" class="epoch-label">epoch {ordered[-1]}</span>'
            "</div>"
        )
    if not count:
        body.insert(0, '<p class="note">No logged images found: was ExplainCallback used with a TensorBoardLogger?</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>\n{_asset('report.css')}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        '<p class="note">Each tile is one probe image (caption: true label y, prediction p | the maps). Move a '
        "slider to change the epoch; the red dashed line in the curves marks it.</p>"
        f"{top}{''.join(body)}<noscript>The sliders and images need JavaScript.</noscript>"
        f'<script type="application/json" id="sources">{json.dumps(sources)}</script>'
        f"<script>\n{_asset('report.js')}</script></body></html>"
    )
