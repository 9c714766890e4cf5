"""One self-contained HTML file from a TensorBoard log dir: every method's maps across epochs, with sliders.

``lightning-explain report LOGDIR -o report.html`` (or :func:`write_report`) reads the event files with
TensorBoard's own reader and writes one HTML file that needs no network when viewed: the images are
base64 ``data:`` URIs, the CSS and the script are inline, and the curves are inline SVG.

For each run (a folder holding event files) and each image tag that :class:`~lightning_explain.ExplainCallback`
logged, the report shows one tile per probe image (its row of the grid: caption band, input and overlays) and
a slider over the logged epochs; a slider at the top moves every method at once. Rows are cut out of the
logged grids with the ``{tag_prefix}/layout`` text that the callback logs with each epoch's grids (see
:class:`~lightning_explain.render.GridLayout`); a grid without a matching layout (older logs, other tags) is
shown whole. Below each method: its drift and focus scalars (``{tag_prefix}/{method}/drift/*`` and
``/focus/*``) against the epoch, with a marker at the epoch the slider shows.

Example:
    >>> from lightning_explain.report import find_runs
    >>> find_runs("/nonexistent")
    []
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lightning_explain.report_svg import line_chart

__all__ = ["Frame", "Progress", "RunData", "find_runs", "read_run", "render_html", "write_report"]

_LAYOUT_SUFFIXES = ("/layout/text_summary", "/layout")  # torch's SummaryWriter appends /text_summary


class Progress:
    """A progress bar on ``stream`` (stderr): redrawn in place on a terminal, one line per ~10 % otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.label, self.count = max(total, 0), label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def update(self, note: str = "") -> None:
        self.count += 1
        if not self.enabled:
            return
        done = self.count / self.total if self.total else 1.0
        bar = "#" * round(24 * done) + "." * (24 - round(24 * done))
        line = f"{self.label} [{bar}] {self.count}/{self.total} {note}"
        if self._tty:
            self.stream.write("\r" + line[:120].ljust(120) + ("\n" if self.count >= self.total else ""))
        elif int(done * 10) != self._last_decile or self.count >= self.total:
            self._last_decile = int(done * 10)
            self.stream.write(line + "\n")
        self.stream.flush()


@dataclass
class Frame:
    """One logged grid: its epoch (None when unknown), step, PNG bytes, pixel size and probe-image rows."""

    epoch: int | None
    step: int
    png: bytes
    size: tuple[int, int]
    rows: list[tuple[int, int]]  # (top, height) of each probe image's row; one whole-grid row without a layout
    cut: bool = True  # whether ``rows`` come from a logged layout (False: the whole grid)


@dataclass
class RunData:
    """What one run's event files hold that the report shows."""

    name: str
    images: dict[str, list[Frame]] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    step_epoch: dict[int, int] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)


def find_runs(logdir: str | Path) -> list[Path]:
    """Folders under ``logdir`` (itself included) that hold TensorBoard event files, sorted."""
    root = Path(logdir)
    if not root.is_dir():
        return []
    return sorted({p.parent for p in root.rglob("*tfevents*") if p.is_file()})


def _png_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from a PNG header (no decoding)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("a logged image is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(height), int(width)


def _texts(acc: Any, tag: str) -> list[tuple[int, str]]:
    from tensorboard.util import tensor_util

    out = []
    for event in acc.Tensors(tag):
        values = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
        if values.size:
            value = values[0]
            out.append((event.step, value.decode("utf-8") if isinstance(value, bytes) else str(value)))
    return out


def read_run(path: str | Path, name: str | None = None) -> RunData:
    """Read one run folder's event files: images, scalars, the epoch of each step and the grid layouts."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    run = RunData(name or Path(path).name)
    for tag in tags.get("scalars", []):
        run.scalars[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
    for step, value in run.scalars.get("epoch", []):
        run.step_epoch[step] = round(value)
    layouts: dict[tuple[str, int], dict[str, int]] = {}
    for tag in tags.get("tensors", []):
        suffix = next((s for s in _LAYOUT_SUFFIXES if tag.endswith(s)), None)
        if suffix is None:
            continue
        for step, text in _texts(acc, tag):
            try:
                meta = json.loads(text)
                grids = meta["grids"]
            except (ValueError, KeyError, TypeError):
                continue
            run.prefixes.add(tag[: -len(suffix)])
            if isinstance(meta.get("epoch"), int):
                run.step_epoch[step] = meta["epoch"]
            for grid_tag, layout in grids.items():
                layouts[(grid_tag, step)] = layout
    for tag in tags.get("images", []):
        frames = []
        for event in acc.Images(tag):
            png = bytes(event.encoded_image_string)
            size = _png_size(png)
            layout = layouts.get((tag, event.step))
            rows = _rows(layout, size)
            cut = layout is not None and rows != [(0, size[0])]
            frames.append(Frame(run.step_epoch.get(event.step), event.step, png, size, rows, cut))
        run.images[tag] = sorted(frames, key=lambda f: f.step)
    return run


def _rows(layout: dict[str, int] | None, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Each probe image's row as ``(top, height)``, or the whole grid when the layout is missing or does not fit."""
    from lightning_explain.render import GridLayout

    if layout is not None:
        try:
            grid = GridLayout(**{k: int(v) for k, v in layout.items()})
        except (TypeError, ValueError):
            grid = None
        if grid is not None and grid.size == size:
            return [(grid.row_box(r)[0], grid.row_box(r)[2] - grid.row_box(r)[0]) for r in range(grid.rows)]
    return [(0, size[0])]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _method_of(tag: str, prefixes: Iterable[str]) -> tuple[str, str]:
    """``(prefix, method)`` of an image tag: ``explain/gradcam`` -> ``("explain", "gradcam")``."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if tag.startswith(prefix + "/"):
            return prefix, tag[len(prefix) + 1 :]
    head, _, tail = tag.rpartition("/")
    return head, tail or tag


def _curves(run: RunData, base: str, kind: str) -> dict[str, list[tuple[float, float]]]:
    """Series ``name -> [(epoch or step, value)]`` for the scalars under ``base/kind/``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for tag, points in sorted(run.scalars.items()):
        if tag.startswith(f"{base}/{kind}/"):
            series = [(float(run.step_epoch.get(s, s)), v) for s, v in points if math.isfinite(v)]
            if series:
                out[tag[len(base) + len(kind) + 2 :]] = series
    return out


def _chart_groups(run: RunData, base: str) -> list[tuple[str, dict[str, list[tuple[float, float]]]]]:
    drift = _curves(run, base, "drift")
    distance = {k: v for k, v in drift.items() if k.startswith(("emd_", "com_shift_"))}
    similarity = {k: v for k, v in drift.items() if k not in distance}
    focus = _curves(run, base, "focus")
    on_object = {k: v for k, v in focus.items() if not k.startswith(("cue_", "energy_in_cue", "border_"))}
    groups = [
        ("drift: distance (image sides)", distance),
        ("drift: similarity", similarity),
        ("focus on the object", on_object),
        ("focus on the cue and the border", {k: v for k, v in focus.items() if k not in on_object}),
    ]
    return [(title, series) for title, series in groups if series]


def _label(frame: Frame) -> str:
    return f"epoch {frame.epoch} (step {frame.step})" if frame.epoch is not None else f"step {frame.step}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em} h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em} h3{font-size:1.05em}
.method{background:#fff;border:1px solid #ddd;border-radius:6px;padding:0.8em 1em;margin:1em 0}
.controls{display:flex;gap:1em;align-items:center;margin:0.5em 0;position:sticky;top:0;background:inherit;z-index:1}
.controls input[type=range]{width:min(480px,60vw)}
.epoch-label{font-weight:600;font-variant-numeric:tabular-nums;min-width:11em}
.tiles{display:flex;flex-wrap:wrap;gap:0.6em}
.tile{display:flex;flex-direction:column;font-size:0.8em;color:#555}
.crop{overflow:hidden;border:1px solid #eee} .crop img{display:block;image-rendering:pixelated}
.charts{display:flex;flex-wrap:wrap;gap:1em;margin-top:0.8em}
.chart text{font-size:11px;fill:#333} .chart .grid{stroke:#eee} .chart .axis{stroke:#999}
.chart .marker{stroke:#d00;stroke-width:1.5;stroke-dasharray:4 3}
.note{color:#666;font-size:0.85em}
"""

_JS = """
const sources = JSON.parse(document.getElementById('sources').textContent);
const sections = Array.from(document.querySelectorAll('.method'));
function show(section, index) {
  const frames = JSON.parse(section.dataset.frames);
  const frame = frames[index];
  const src = sources[frame.source];
  section.querySelector('input.slider').value = index;
  section.querySelector('.epoch-label').textContent = frame.label;
  section.querySelectorAll('.tile').forEach((tile, r) => {
    const row = frame.rows[r];
    tile.style.display = row ? '' : 'none';
    if (!row) return;
    const crop = tile.querySelector('.crop'), img = tile.querySelector('img');
    crop.style.height = row[1] + 'px'; crop.style.width = frame.width + 'px';
    img.style.marginTop = (-row[0]) + 'px';
    if (img.getAttribute('src') !== src) img.setAttribute('src', src);
  });
  section.querySelectorAll('svg.chart').forEach(svg => {
    const line = svg.querySelector('.marker');
    if (frame.x === null || !svg.dataset.x0) { line.style.display = 'none'; return; }
    const x = Number(svg.dataset.x0) + (frame.x - Number(svg.dataset.xmin)) * Number(svg.dataset.scale);
    line.setAttribute('x1', x); line.setAttribute('x2', x); line.style.display = '';
  });
}
sections.forEach(section => {
  const slider = section.querySelector('input.slider');
  slider.addEventListener('input', () => show(section, Number(slider.value)));
  show(section, Number(slider.value));
});
const all = document.getElementById('all-epochs');
if (all) {
  const epochs = JSON.parse(all.dataset.epochs);
  all.addEventListener('input', () => {
    const epoch = epochs[Number(all.value)];
    document.getElementById('all-label').textContent = 'epoch ' + epoch;
    sections.forEach(section => {
      const frames = JSON.parse(section.dataset.frames);
      let best = 0;
      frames.forEach((f, i) => { if (f.x !== null && f.x <= epoch) best = i; });
      show(section, best);
    });
  });
}
"""


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
    charts = "".join(line_chart(title, series) for title, series in _chart_groups(run, f"{prefix}/{method}"))
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


def render_html(runs: Sequence[RunData], title: str, progress: Progress | None = None) -> str:
    """The report as one HTML string (no external references)."""
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
                progress.update(f"{run.name}: {tag}")
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
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        '<p class="note">Each tile is one probe image (caption: true label y, prediction p | the maps). Move a '
        "slider to change the epoch; the red dashed line in the curves marks it.</p>"
        f"{top}{''.join(body)}<noscript>The sliders and images need JavaScript.</noscript>"
        f'<script type="application/json" id="sources">{json.dumps(sources)}</script>'
        f"<script>{_JS}</script></body></html>"
    )


def write_report(logdir: str | Path, output: str | Path, *, quiet: bool = False) -> Path:
    """Read every run under ``logdir`` and write the HTML report to ``output``; return its path.

    Raises:
        FileNotFoundError: when ``logdir`` holds no event files.
    """
    root = Path(logdir)
    paths = find_runs(root)
    if not paths:
        raise FileNotFoundError(
            f"no TensorBoard event files under {root}: pass the log dir of a run that used a TensorBoardLogger "
            "(the folder given to TensorBoardLogger(save_dir), or one of its versions)."
        )
    reading = Progress(len(paths), "reading events", enabled=not quiet)
    runs = []
    for path in paths:
        name = str(path.relative_to(root)) if path != root else root.name
        runs.append(read_run(path, name))
        reading.update(name)
    rendering = Progress(sum(len(r.images) for r in runs), "rendering", enabled=not quiet)
    text = render_html(runs, f"lightning_explain report: {root.name}", rendering)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if not quiet:
        sys.stderr.write(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n")
    return out
