"""The Explain dashboard as one offline HTML file: the same front-end and the same data API, inlined.

:func:`dashboard_html` asks :class:`~lightning_explain.dashboard.data.Logdir` every question the front-end
(``static/explain.js``) can ask (runs, each run, each view's charts, each epoch's per-image numbers, every
film-strip tile) and stores the answers in the page as JSON under the same keys the front-end builds
(``route?name=value&...``); a tiny shim answers the front-end's ``api.get`` and ``api.tile`` from that table
instead of HTTP. Each distinct image is stored once (the inputs' column is the same in every view of a run), and
enlarged cells are stored at their image's own size (:func:`~lightning_explain.dashboard.data.deblock`), shown
pixelated.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     page = dashboard_html(root, "empty")
    >>> page.startswith("<!DOCTYPE html>") and "lx-data" in page
    True
"""

from __future__ import annotations

import base64
import html
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

from lightning_explain.dashboard.data import ApiError, Logdir
from lightning_explain.dashboard.plugin import static_asset

__all__ = ["collect", "dashboard_html"]

#: The shim between the front-end and the inlined answers (the report's host; index.js is TensorBoard's).
_SHIM = """
const DATA = JSON.parse(document.getElementById('lx-data').textContent);
const key = (route, params) => route + '?' + Object.entries(params).map(([k, v]) => `${k}=${v}`).join('&');
const api = {
  get: async (route, params) => {
    const found = DATA.json[key(route, params)];
    if (found === undefined) throw new Error(`not in this report: ${key(route, params)}`);
    return found;
  },
  tile: params => DATA.images[DATA.tiles[key('tile', params)]] ?? '',
};
window.explainDashboard = await mount(document.getElementById('lx-app'), api, { live: false });
"""


def _key(route: str, **params: Any) -> str:
    """The key the shim looks an answer up by (``route?name=value&...`` in the front-end's argument order)."""
    return f"{route}?" + "&".join(f"{k}={v}" for k, v in params.items())


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _tile(data: Logdir, skipped: set[tuple[str, str, int]], name: str, tag: str, step: int, part: str) -> bytes | None:
    """One film-strip column's PNG; None (shown empty) when its grid is damaged, not a PNG or too large to decode (a
    warning once per grid)."""
    try:
        return data.tile(name, tag, str(step), part)
    except ApiError as err:
        if err.status != 422:
            raise
        if (name, tag, step) not in skipped:
            skipped.add((name, tag, step))
            warnings.warn(
                f"the report leaves out the grid {tag!r} of run {name!r} at step {step}: {err.message}",
                UserWarning,
                stacklevel=3,
            )
        return None


def collect(
    logdir: str | os.PathLike[str], progress: Callable[[str], None] | None = None, *, require_images: bool = False
) -> dict[str, Any]:
    """Every answer of the data API for ``logdir``: ``{"json": {key: answer}, "tiles": {key: index into images},
    "images": [data URI, ...]}`` (each distinct PNG once); ``progress`` is called once per view with its name.

    Raises:
        FileNotFoundError: with ``require_images``, when no run holds an explained view (nothing to show).
    """
    data = Logdir(logdir, rescan_seconds=0.0)
    answers: dict[str, Any] = {}
    tiles: dict[str, int] = {}
    images: dict[str, int] = {}  # data URI -> its index: an image shown in several places is stored once
    skipped: set[tuple[str, str, int]] = set()

    def store(key: str, png: bytes | None) -> None:
        if png is not None:
            tiles[key] = images.setdefault(_uri(png), len(images))

    runs = data.runs()
    answers[_key("runs")] = runs
    for entry in runs["runs"]:
        name = entry["name"]
        run = data.run(name)
        answers[_key("run", run=name)] = run
        for view in run["views"]:
            tag = view["tag"]
            answers[_key("charts", run=name, tag=tag)] = data.charts(name, tag)
            for epoch, step in view["frames"]:
                answers[_key("numbers", run=name, tag=tag, epoch=epoch)] = data.numbers(name, tag, str(epoch))
                store(
                    _key("tile", run=name, tag=tag, step=step, part="maps"),
                    _tile(data, skipped, name, tag, step, "maps"),
                )
            if view["columns"] > 1:  # the inputs column (the same image in every view of a run: stored once)
                step = view["frames"][-1][1]
                store(
                    _key("tile", run=name, tag=tag, step=step, part="input"),
                    _tile(data, skipped, name, tag, step, "input"),
                )
            if progress is not None:
                progress(f"{name}: {tag}")
    if require_images and not any(answers[_key("run", run=entry["name"])]["views"] for entry in runs["runs"]):
        count = len(runs["runs"])
        raise FileNotFoundError(
            f"the event files under {logdir} ({count} run{'s' * (count != 1)}) hold no images: the report shows "
            "the image grids lightning_explain's callbacks log (tags like 'explain/gradcam', with their "
            "'.../layout' texts). Pass the log dir of a run with ExplainCallback and a TensorBoardLogger."
        )
    return {"json": answers, "tiles": tiles, "images": list(images)}


def dashboard_html(
    logdir: str | os.PathLike[str],
    title: str,
    progress: Callable[[str], None] | None = None,
    *,
    require_images: bool = False,
) -> str:
    """The offline dashboard of ``logdir`` as one self-contained HTML string (no network, no external file).

    ``require_images``: raise :class:`FileNotFoundError` when no run holds an explained view (see :func:`collect`).
    """
    data = collect(logdir, progress, require_images=require_images)
    # Every "<" as \u003c (still the same JSON): class names such as "<!--<script>" or "</script>" cannot end the
    # data's <script> element early nor make the parser swallow the front-end's script after it.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    script = static_asset("explain.js") + "\n" + _SHIM
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>\n{static_asset('style.css')}</style></head><body>"
        f'<h1 class="lx-title">{html.escape(title)}</h1>'
        '<div id="lx-app"></div><noscript>The film strips and the charts need JavaScript.</noscript>'
        f'<script type="application/json" id="lx-data">{payload}</script>'
        f'<script type="module">\n{script}</script></body></html>'
    )
