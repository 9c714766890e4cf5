"""Reading a run's TensorBoard event files for the report: grids, their rows, scalars and the epoch of each step.

Example:
    >>> find_runs("/nonexistent")
    []
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Frame", "RunData", "find_runs", "read_run"]

_LAYOUT_SUFFIXES = ("/layout/text_summary", "/layout")  # torch's SummaryWriter appends /text_summary


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
    from lightning_explain.output.render import GridLayout

    if layout is not None:
        try:
            grid = GridLayout(**{k: int(v) for k, v in layout.items()})
        except (TypeError, ValueError):
            grid = None
        if grid is not None and grid.size == size:
            return [(grid.row_box(r)[0], grid.row_box(r)[2] - grid.row_box(r)[0]) for r in range(grid.rows)]
    return [(0, size[0])]
