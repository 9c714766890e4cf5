"""The dashboard's data API: what the Explain tab (and the offline report) reads from a log dir.

:class:`Logdir` finds the runs under a log dir (every folder holding ``*tfevents*`` files, named by its path
relative to the log dir, ``"."`` for the log dir itself, as TensorBoard names them) and indexes each run's event
files incrementally: a refresh reads only the bytes written since the last one, and a record cut short at the end
of a file (training still writing it, or killed) is left for the next refresh, so what is complete is served.
Images are not kept in memory: the index holds where each one lies in its file, and a cell is cut from its grid
(with the layout that :class:`~lightning_explain.ExplainCallback` logs next to every epoch's grids) only when asked.

Every query takes names and numbers from the client and checks them against the index; nothing the client sends
becomes part of a file path, so no run, tag or index can read outside the log dir. A bad argument raises
:class:`ApiError` with an HTTP status and a message that names the argument and what is allowed.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     Logdir(root).runs()["runs"]
    []
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_explain.output.charts import CHARTS
from lightning_explain.output.layout import GridLayout

__all__ = ["ApiError", "Logdir", "RunIndex", "cut_cell", "deblock", "decode_png", "encode_png", "parse_index"]

#: The text tags that hold a grid layout (torch's SummaryWriter appends ``/text_summary`` to a text tag).
_LAYOUT_SUFFIXES = ("/layout/text_summary", "/layout")
_ALERT = re.compile(r"^focus_alert/(?P<name>.+)/fired$")
#: The largest index a query may name: larger numbers are refused before any lookup.
MAX_INDEX = 10**9
#: Seconds between two scans of the log dir for new runs and new bytes (queries in between use the index as is).
RESCAN_SECONDS = 1.0


class ApiError(Exception):
    """A query the data API refuses: ``status`` is the HTTP status (4xx), ``message`` says what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_index(name: str, value: str | None, limit: int | None = None) -> int:
    """``value`` as a whole number in ``[0, limit)``; :class:`ApiError` (400) naming ``name`` otherwise.

    Example:
        >>> parse_index("row", "3", 16)
        3
        >>> parse_index("row", "-1", 16)
        Traceback (most recent call last):
        ...
        lightning_explain.dashboard.data.ApiError: row must be a whole number from 0 to 15; got '-1'.
    """
    top = MAX_INDEX if limit is None else limit
    allowed = f"from 0 to {top - 1}" if top > 0 else "(there is none)"
    if value is None:
        raise ApiError(400, f"{name} is missing: pass {name}=<a whole number {allowed}>.")
    if not re.fullmatch(r"\d{1,10}", value) or int(value) >= top:
        raise ApiError(400, f"{name} must be a whole number {allowed}; got {value[:40]!r}.")
    return int(value)


@dataclass(frozen=True)
class _Where:
    """Where one record lies: its file, the offset of its payload and the payload's length."""

    path: str
    offset: int
    length: int


@dataclass
class _File:
    """How far one event file has been read (``offset``) and its size then."""

    offset: int = 0
    size: int = -1


#: The longest event record read, in bytes: a longer one is skipped with a warning, so a hostile length never makes
#: the reader allocate more (a grid of 16 probe images by 8 columns of 128 px is about 1 MB).
MAX_RECORD_BYTES = 64 * 2**20
#: Records up to this many bytes (scalars, short texts) have their checksum checked when indexed; longer ones (the
#: grids) when they are read to be served (:meth:`RunIndex.png`).
CHECK_AT_INDEX_BYTES = 4096
#: The most pixels a logged grid may claim in its PNG header for it to be decoded (100 MB as RGB).
MAX_GRID_PIXELS = 2**25
#: The longest tag indexed; longer tags, and tags with control characters, are skipped with a warning.
MAX_TAG_CHARS = 512
_warned_damage: set[tuple[str, int, str]] = set()


def _warn_damage(path: str, offset: int, what: str) -> None:
    """Warn once per file, byte and kind of damage (a live dashboard re-reads a file's tail when it grows)."""
    key = (path, offset, what)
    if key not in _warned_damage and len(_warned_damage) < 10_000:
        _warned_damage.add(key)
        warnings.warn(f"event file {path}, byte {offset}: {what}", UserWarning, stacklevel=3)


def _masked_crc(data: bytes) -> int:
    from lightning_explain.output._crc32c import masked_crc32c

    return masked_crc32c(data)


def _records(path: str, start: int) -> Iterator[tuple[int, bytes]]:
    """``(payload offset, payload)`` of each complete TFRecord in ``path`` from byte ``start``.

    A record is ``uint64 length, uint32 masked CRC-32C of the length, payload, uint32 masked CRC-32C of the
    payload``. Reading stops at the first record that is not complete yet (the file is still being written, or was
    cut short: a torn last record is left for the next refresh, never an error) and at a length whose checksum is
    wrong (the framing is lost: the rest of the file is ignored, with a warning). A record longer than
    :data:`MAX_RECORD_BYTES` and a short record whose payload checksum is wrong (:data:`CHECK_AT_INDEX_BYTES`) are
    skipped with a warning. One record at a time is in memory.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = start
        f.seek(pos)
        while pos + 12 <= size:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack_from("<Q", header)
            (length_crc,) = struct.unpack_from("<I", header, 8)
            if _masked_crc(header[:8]) != length_crc:
                _warn_damage(path, pos, "a record's length fails its checksum; the rest of the file is ignored.")
                return
            end = pos + 12 + length + 4
            if end > size:
                return
            if length > MAX_RECORD_BYTES:
                _warn_damage(path, pos, f"a record of {length} bytes (more than {MAX_RECORD_BYTES}) is skipped.")
                f.seek(end)
                pos = end
                continue
            body = f.read(length + 4)
            if len(body) < length + 4:
                return
            payload = body[:length]
            if length <= CHECK_AT_INDEX_BYTES and _masked_crc(payload) != struct.unpack_from("<I", body, length)[0]:
                _warn_damage(path, pos, "a record fails its checksum and is skipped.")
            else:
                yield pos + 12, payload
            pos = end


def _has_layout(path: str) -> bool:
    """Whether the event file ``path`` holds a layout text, read up to the first one (see :meth:`Logdir.has_data`)."""
    from tensorboard.compat.proto.event_pb2 import Event

    try:
        for _, payload in _records(path, 0):
            if b"/layout" not in payload:  # most records (scalars, images) are passed over without parsing
                continue
            try:
                values = Event.FromString(payload).summary.value
            except Exception:  # a damaged record: the index skips it too
                continue
            if any(v.tag.endswith(_LAYOUT_SUFFIXES) for v in values):
                return True
    except OSError:
        return False
    return False


def _tag_ok(tag: str, path: str) -> bool:
    """Whether a tag is indexed: at most :data:`MAX_TAG_CHARS` characters, no control characters (a warning
    otherwise). Tags are only names here: none ever becomes part of a path."""
    if len(tag) <= MAX_TAG_CHARS and not any(ord(ch) < 32 or ord(ch) == 127 for ch in tag):
        return True
    _warn_damage(
        path,
        0,
        f"the tag {tag[:60]!r}{'...' if len(tag) > 60 else ''} ({len(tag)} characters) is skipped: "
        f"tags must have at most {MAX_TAG_CHARS} characters and no control characters.",
    )
    return False


@dataclass
class RunIndex:
    """The index of one run's event files: image positions, scalars, text layouts and the epoch of each step."""

    folder: str
    name: str
    files: dict[str, _File] = field(default_factory=dict)
    images: dict[str, dict[int, _Where]] = field(default_factory=dict)
    scalars: dict[str, dict[int, float]] = field(default_factory=dict)
    layouts: dict[int, dict[str, Any]] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)
    layer: str | None = None
    version: int = 0
    _views: tuple[int, dict[str, dict[str, Any]]] | None = field(default=None, repr=False)

    def refresh(self) -> bool:
        """Read what was appended to the run's event files since the last refresh; True when anything was new."""
        try:
            names = sorted(n for n in os.listdir(self.folder) if "tfevents" in n)
        except OSError:
            return False
        changed = False
        for name in names:
            path = os.path.join(self.folder, name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            state = self.files.setdefault(path, _File())
            if size == state.size:
                continue
            state.size = size
            for offset, payload in _records(path, state.offset):
                self._add(path, offset, payload)
                state.offset = offset + len(payload) + 4
                changed = True
        if changed:
            self.version += 1
        return changed

    def _add(self, path: str, offset: int, payload: bytes) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        try:
            event = Event.FromString(payload)
        except Exception:  # a damaged record: skip it, keep the rest of the file
            return
        if not event.HasField("summary"):
            return
        step = int(event.step)
        for value in event.summary.value:
            if not _tag_ok(value.tag, path):
                continue
            kind = value.WhichOneof("value")
            if kind == "image":
                self.images.setdefault(value.tag, {})[step] = _Where(path, offset, len(payload))
            elif kind == "simple_value":
                self.scalars.setdefault(value.tag, {})[step] = float(value.simple_value)
            elif kind == "tensor":
                self._add_tensor(value, step)

    def _add_tensor(self, value: Any, step: int) -> None:
        tensor = value.tensor
        plugin = value.metadata.plugin_data.plugin_name
        if plugin == "scalars" or (not plugin and (tensor.float_val or tensor.double_val)):
            numbers = list(tensor.float_val) or list(tensor.double_val)
            if numbers:
                self.scalars.setdefault(value.tag, {})[step] = float(numbers[0])
            return
        if not tensor.string_val:
            return
        text = tensor.string_val[0].decode("utf-8", "replace")
        tag = value.tag
        suffix = next((s for s in _LAYOUT_SUFFIXES if tag.endswith(s)), None)
        if suffix is not None:
            try:
                meta = json.loads(text)
            except ValueError:
                return
            if isinstance(meta, dict) and isinstance(meta.get("grids"), dict):
                meta["prefix"] = tag[: -len(suffix)]
                self.prefixes.add(meta["prefix"])
                self.layouts[step] = meta
        elif tag.endswith(("/layer/text_summary", "/layer")):
            self.layer = text

    # ------------------------------------------------------------------------------------- derived views

    def epoch_of_image(self, step: int) -> int | None:
        """The epoch of a grid (or alert) logged at ``step``: from the layout logged with it, else Lightning's
        ``epoch`` scalar at that step."""
        meta = self.layouts.get(step)
        if meta is not None and isinstance(meta.get("epoch"), int):
            return int(meta["epoch"])
        value = self.scalars.get("epoch", {}).get(step)
        return round(value) if value is not None else None

    def epoch_of_metric(self, step: int) -> int | None:
        """The epoch of a metric logged through Lightning at ``step`` (Lightning logs ``epoch`` with it)."""
        value = self.scalars.get("epoch", {}).get(step)
        if value is not None:
            return round(value)
        return self.epoch_of_image(step)

    def views(self) -> dict[str, dict[str, Any]]:
        """Each image tag under one of our prefixes: its method, rows, columns, a cell's width / height (``aspect``) and
        ``{epoch: step}`` (last wins);
        computed once per version of the index."""
        if self._views is not None and self._views[0] == self.version:
            return self._views[1]
        out: dict[str, dict[str, Any]] = {}
        for tag, steps in sorted(self.images.items()):
            prefix = max((p for p in self.prefixes if tag.startswith(p + "/")), key=len, default=None)
            if prefix is None:
                continue
            frames: dict[int, int] = {}
            rows, columns, aspect = 1, 1, 1.0
            for step in sorted(steps):
                epoch = self.epoch_of_image(step)
                frames[epoch if epoch is not None else step] = step
                grid = self.grid_layout(tag, step)
                if grid is not None and grid.cell_height > 0:
                    rows, columns = grid.rows, grid.columns
                    aspect = round(grid.cell_width / grid.cell_height, 4)
            out[tag] = {
                "tag": tag,
                "prefix": prefix,
                "method": tag[len(prefix) + 1 :],
                "rows": rows,
                "columns": columns,
                "aspect": aspect,
                "frames": [[epoch, frames[epoch]] for epoch in sorted(frames)],
            }
        self._views = (self.version, out)
        return out

    def grid_layout(self, tag: str, step: int) -> Any:
        """The :class:`~lightning_explain.output.render.GridLayout` logged with the grid of ``tag`` at ``step``, or
        None."""
        meta = self.layouts.get(step)
        raw = meta["grids"].get(tag) if meta is not None else None
        if not isinstance(raw, dict):
            return None
        try:
            layout = GridLayout(**{k: int(v) for k, v in raw.items()})
        except (TypeError, ValueError):
            return None
        # A layout from a hostile file must describe real cells: with these bounds, one that fits its grid (checked
        # when the grid is cut) has at most as many rows and columns as the grid has pixels.
        if (
            min(layout.rows, layout.columns, layout.cell_height, layout.cell_width) < 1
            or min(layout.band, layout.pad) < 0
        ):
            return None
        return layout

    def alerts(self) -> list[dict[str, Any]]:
        """Each :class:`~lightning_explain.FocusAlert` that fired: its name and the epoch it fired at."""
        out = []
        for tag, values in sorted(self.scalars.items()):
            found = _ALERT.match(tag)
            if found is None:
                continue
            fired = [step for step, v in sorted(values.items()) if v >= 0.5]
            if fired:
                epoch = self.epoch_of_image(fired[0])
                out.append({"name": found.group("name"), "epoch": epoch if epoch is not None else fired[0]})
        return out

    def captions(self) -> dict[str, list[Any]]:
        """``{epoch: [caption per probe row]}`` from the layouts (each caption a dict, or None when not logged)."""
        out: dict[str, list[Any]] = {}
        for step, meta in sorted(self.layouts.items()):
            rows = meta.get("rows")
            if isinstance(rows, list):
                epoch = self.epoch_of_image(step)
                out[str(epoch if epoch is not None else step)] = rows
        return out

    def png(self, where: _Where, tag: str) -> bytes:
        """The PNG bytes of the image ``tag`` in the record at ``where``."""
        from tensorboard.compat.proto.event_pb2 import Event

        with open(where.path, "rb") as f:
            f.seek(where.offset)
            body = f.read(where.length + 4)
        payload = body[: where.length]
        if len(body) < where.length + 4 or _masked_crc(payload) != struct.unpack_from("<I", body, where.length)[0]:
            raise ApiError(422, f"the image {tag!r} is damaged in {where.path} (its record fails its checksum).")
        for value in Event.FromString(payload).summary.value:
            if value.tag == tag and value.WhichOneof("value") == "image":
                return bytes(value.image.encoded_image_string)
        raise ApiError(404, f"the image {tag!r} is no longer where it was logged; reload the page.")


def cut_cell(grid: np.ndarray, layout: Any, row: int, column: int) -> np.ndarray:
    """Cell ``(row, column)`` of a decoded grid ``H x W x 3`` (the whole grid when ``layout`` is None)."""
    if layout is None:
        return grid
    top, left, bottom, right = layout.cell_box(row, column)
    return grid[top:bottom, left:right]


def deblock(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` without the enlargement of small images: a grid cell of a 16 px image in a 128 px cell repeats each
    pixel in an 8 x 8 block (:func:`~lightning_explain.output.render.compose_grid` enlarges by a whole factor with
    nearest neighbours); this returns one pixel per block, so a browser that draws it ``image-rendering: pixelated``
    at the
    cell's size shows exactly the logged pixels from 64 times fewer bytes. Other cells come back unchanged.

    Example:
        >>> deblock(np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2, 1), np.ones((3, 3, 1), np.uint8))).shape
        (2, 2, 1)
    """
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        return pixels
    rows = np.flatnonzero((pixels[1:] != pixels[:-1]).reshape(pixels.shape[0] - 1, -1).any(axis=1)) + 1
    cols = (
        np.flatnonzero(
            (pixels[:, 1:] != pixels[:, :-1]).transpose(1, 0, 2).reshape(pixels.shape[1] - 1, -1).any(axis=1)
        )
        + 1
    )
    step_h = math.gcd(pixels.shape[0], *rows.tolist())  # every change of row lies on a block edge
    step_w = math.gcd(pixels.shape[1], *cols.tolist())
    if step_h == 1 and step_w == 1:
        return pixels
    return np.ascontiguousarray(pixels[::step_h, ::step_w])


def encode_png(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of a ``uint8`` ``H x W x 3`` array."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's header, without decoding; :class:`ApiError` (422) when it is no PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ApiError(422, "a logged image is not a PNG (its header is not a PNG's).")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as a ``uint8`` ``H x W x 3`` array; :class:`ApiError` (422) when it is no PNG, is damaged, or claims
    more than :data:`MAX_GRID_PIXELS` pixels in its header (checked before decoding: no decompression bomb)."""
    from PIL import Image

    width, height = _png_size(data)
    if width * height > MAX_GRID_PIXELS:
        raise ApiError(
            422, f"a logged image claims {width} x {height} pixels, more than {MAX_GRID_PIXELS}: it is not decoded."
        )
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ApiError(422, f"a logged image cannot be decoded ({type(err).__name__}: {err}).") from err


def _finite(value: float) -> float | None:
    return round(value, 5) if math.isfinite(value) else None


class _Lru(OrderedDict[Any, Any]):
    """A dict that keeps its ``limit`` most recently used entries (the decoded grids, cells and tiles)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def fresh(self, key: Any) -> Any:
        """The value of ``key`` (now the most recently used), or None."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)


class Logdir:
    """The runs under ``root`` and the queries the Explain tab makes (see the module docstring).

    Args:
        root: a TensorBoard log dir.
        rescan_seconds: the least time between two looks at the disk; queries in between use the index.
        cache_grids: how many decoded grids to keep (cells of one epoch come from one grid).
    """

    def __init__(self, root: str | os.PathLike[str], rescan_seconds: float = RESCAN_SECONDS, cache_grids: int = 64):
        self.root = os.path.abspath(os.fspath(root))
        self.rescan_seconds = rescan_seconds
        self._runs: dict[str, RunIndex] = {}
        self._scanned = -math.inf
        self._lock = threading.RLock()
        self._grids = _Lru(cache_grids)  # (run, tag, step) -> decoded grid
        self._cells = _Lru(64 * cache_grids)  # (run, tag, step, row, col) -> PNG
        self._tiles = _Lru(4 * cache_grids)  # (run, tag, step, part) -> PNG
        self._layout_seen: dict[str, tuple[int, bool]] = {}

    # ---------------------------------------------------------------------------------------------- index

    def refresh(self, force: bool = False) -> None:
        """Find new runs and read new bytes, at most once per ``rescan_seconds`` unless ``force``."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._scanned < self.rescan_seconds:
                return
            self._scanned = now
            for folder in self._folders():
                rel = os.path.relpath(folder, self.root)
                name = "." if rel == "." else Path(rel).as_posix()
                run = self._runs.get(name)
                if run is None:
                    run = self._runs[name] = RunIndex(folder, name)
                run.refresh()

    def _folders(self) -> list[str]:
        found: list[str] = []
        if not os.path.isdir(self.root):
            return found
        for folder, _, files in os.walk(self.root):
            if any("tfevents" in f for f in files):
                found.append(folder)
        return sorted(found)

    def has_data(self) -> bool:
        """Whether any run holds grids logged by this package's callbacks (a layout text).

        TensorBoard asks at its start-up and at every reload, for a tab the user may never open: until the tab asks
        for data (which builds the index), each event file is read only up to its first layout text (the first
        explained epoch's records), not whole.
        """
        with self._lock:
            if any(run.layouts for run in self._runs.values()):
                return True
            for folder in self._folders():
                try:
                    names = sorted(n for n in os.listdir(folder) if "tfevents" in n)
                except OSError:
                    continue
                if any(self._has_layout(os.path.join(folder, n)) for n in names):
                    return True
            return False

    def _has_layout(self, path: str) -> bool:
        """:func:`_has_layout`, remembered per file size (TensorBoard asks at every reload; a file is read again only
        when it grew)."""
        try:
            size = os.path.getsize(path)
        except OSError:
            return False
        known = self._layout_seen.get(path)
        if known is None or known[0] != size:
            known = self._layout_seen[path] = (size, _has_layout(path))
        return known[1]

    def _run(self, name: str | None) -> RunIndex:
        self.refresh()
        if not name:
            raise ApiError(400, "run is missing: pass run=<a run name from runs>.")
        run = self._runs.get(name)
        if run is None or not run.layouts:
            known = sorted(n for n, r in self._runs.items() if r.layouts)
            raise ApiError(404, f"no run {name[:80]!r} with explained epochs in this log dir; known: {known[:20]}.")
        return run

    def _view(self, run: RunIndex, tag: str | None) -> dict[str, Any]:
        views = run.views()
        if not tag:
            raise ApiError(400, "tag is missing: pass tag=<one of the run's views, e.g. explain/gradcam>.")
        if tag not in views:
            raise ApiError(404, f"run {run.name!r} has no view {tag[:80]!r}; its views: {sorted(views)}.")
        return views[tag]

    # ---------------------------------------------------------------------------------------------- queries

    def runs(self) -> dict[str, Any]:
        """``{"runs": [{"name", "version"}], "others": <runs without explained epochs>}``: cheap, polled."""
        self.refresh()
        with self._lock:
            ours = [{"name": n, "version": r.version} for n, r in sorted(self._runs.items()) if r.layouts]
            return {"runs": ours, "others": sum(1 for r in self._runs.values() if not r.layouts)}

    def run(self, name: str | None) -> dict[str, Any]:
        """One run: its views (method, rows, columns, ``[[epoch, step], ...]``), captions, alerts and layer."""
        with self._lock:
            run = self._run(name)
            views = run.views()
            return {
                "run": run.name,
                "version": run.version,
                "views": list(views.values()),
                "captions": run.captions(),
                "alerts": run.alerts(),
                "layer": run.layer,
            }

    def charts(self, name: str | None, tag: str | None) -> dict[str, Any]:
        """The charts of :data:`~lightning_explain.output.charts.CHARTS` for the method of view ``tag``: per chart its
        title and series ``{name: [[epoch, median over probe images], ...]}`` (NaN left out), plus the alerts."""
        with self._lock:
            run = self._run(name)
            view = self._view(run, tag)
            base = f"{view['prefix']}/{view['method']}"
            charts = []
            for chart in CHARTS:
                series = {}
                for metric in chart.names:
                    points = run.scalars.get(f"{base}/{chart.kind}/{metric}", {})
                    xy = []
                    for step, value in sorted(points.items()):
                        epoch = run.epoch_of_metric(step)
                        if math.isfinite(value):
                            xy.append([epoch if epoch is not None else step, round(value, 5)])
                    if xy:
                        series[metric] = xy
                if series:
                    charts.append({"title": chart.title, "kind": chart.kind, "series": series})
            return {"run": run.name, "tag": view["tag"], "charts": charts, "alerts": run.alerts()}

    def numbers(self, name: str | None, tag: str | None, epoch: str | None) -> dict[str, Any]:
        """Each probe image's own numbers for the method of ``tag`` at ``epoch`` (``{metric: [value per image]}``;
        empty when the run logged none), for the charts' hover."""
        with self._lock:
            run = self._run(name)
            view = self._view(run, tag)
            frames = dict((e, s) for e, s in view["frames"])
            wanted = parse_index("epoch", epoch)
            if wanted not in frames:
                raise ApiError(404, f"view {view['tag']!r} of run {run.name!r} has no epoch {wanted}.")
            meta = run.layouts.get(frames[wanted], {})
            raw = meta.get("per_image")
            per_image: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            head = f"{view['method']}/"
            return {
                "epoch": wanted,
                "numbers": {k[len(head) :]: v for k, v in per_image.items() if k.startswith(head)},
            }

    def _locate(self, name: str | None, tag: str | None, step: str | None) -> tuple[RunIndex, str, int, _Where, Any]:
        """The run, view tag, step, record and layout (None: none logged) of the grid a cell or tile query names;
        :class:`ApiError` for an unknown run, view or step. Call it holding the lock."""
        run = self._run(name)
        view = self._view(run, tag)
        assert tag is not None
        at = parse_index("step", step)
        where = run.images[tag].get(at)
        if where is None:
            steps = [s for _, s in view["frames"]]
            raise ApiError(404, f"view {tag!r} of run {run.name!r} has no image at step {at}; steps: {steps[:50]}.")
        return run, tag, at, where, run.grid_layout(tag, at)

    def cell(self, name: str | None, tag: str | None, step: str | None, row: str | None, col: str | None) -> bytes:
        """The PNG of one cell: row ``row`` (a probe image), column ``col`` (0: the input) of the grid of view
        ``tag`` logged at ``step`` (the whole grid when no layout was logged with it), enlarged cells stored at their
        image's own size (:func:`deblock`: shown pixelated at the cell size, the same pixels)."""
        with self._lock:
            run, tag, at, where, layout = self._locate(name, tag, step)
            rows, columns = (layout.rows, layout.columns) if layout is not None else (1, 1)
            r, c = parse_index("row", row, rows), parse_index("col", col, columns)
            key = (run.name, tag, at, r, c)
            cached = self._cells.fresh(key)
            if cached is not None:
                return bytes(cached)
            grid, layout = self._grid(run, tag, at, where, layout)
        data = encode_png(deblock(cut_cell(grid, layout, r, c)))
        with self._lock:
            self._cells.put(key, data)
        return data

    def tile(self, name: str | None, tag: str | None, step: str | None, part: str | None) -> bytes:
        """The PNG of one film-strip column: the cells of every row of the grid of view ``tag`` logged at ``step``,
        stacked without gaps (row ``r`` is the ``r``-th band of ``cell height`` pixels).

        ``part="maps"``: each row's maps side by side (grid columns 1 and up; the whole grid when no layout was logged
        with it, column 0 when the grid has one column); ``part="input"``: each row's input (column 0). Enlarged cells
        come back at their image's own size (:func:`deblock`), so one explained epoch of 16 probe images is one
        small image and one request instead of sixteen.
        """
        if part not in ("maps", "input"):
            raise ApiError(400, f"part must be 'maps' or 'input'; got {str(part)[:40]!r}.")
        with self._lock:
            run, tag, at, where, layout = self._locate(name, tag, step)
            if part == "input" and (layout is None or layout.columns < 2):
                raise ApiError(404, f"view {tag!r} of run {run.name!r} logged no input column at step {at}.")
            key = (run.name, tag, at, part)
            cached = self._tiles.fresh(key)
            if cached is not None:
                return bytes(cached)
            grid, layout = self._grid(run, tag, at, where, layout)
        if layout is None:
            pixels = deblock(grid)
        else:
            columns = [0] if part == "input" or layout.columns == 1 else list(range(1, layout.columns))
            whole = np.concatenate(
                [np.concatenate([cut_cell(grid, layout, r, c) for c in columns], axis=1) for r in range(layout.rows)]
            )
            pixels = deblock(whole)
            if pixels.shape[0] % layout.rows or pixels.shape[1] % len(columns):  # blocks across cells (flat maps)
                pixels = whole  # keep a whole number of pixels per cell, so each row is a band of the image
        data = encode_png(pixels)
        with self._lock:
            self._tiles.put(key, data)
        return data

    def _grid(
        self, run: RunIndex, tag: str, step: int, where: _Where, layout: GridLayout | None
    ) -> tuple[np.ndarray, GridLayout | None]:
        """The decoded grid (cached) and its layout, None when the layout does not fit the grid (served whole)."""
        key = (run.name, tag, step)
        grid: np.ndarray | None = self._grids.fresh(key)
        if grid is None:
            grid = decode_png(run.png(where, tag))
            self._grids.put(key, grid)
        fits = layout is not None and (grid.shape[0], grid.shape[1]) == layout.size
        return grid, layout if fits else None
