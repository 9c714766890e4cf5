"""The Explain tab: a dynamic TensorBoard plugin, found through the ``tensorboard_plugins`` entry point.

TensorBoard (2.x) loads every entry point of the ``tensorboard_plugins`` group at start-up; this package declares
``lightning_explain = "lightning_explain.dashboard.plugin:ExplainPlugin"``, so ``tensorboard --logdir runs`` shows
the tab with nothing else to install. The tab is an iframe that loads ``static/index.js`` (an ES module, plain
JavaScript written by hand and shipped as package data, no build step) from this plugin's routes; the module reads
the data API below and draws the film strip and the charts.

Routes, under ``/data/plugin/lightning_explain/``; every argument is checked (see
:class:`~lightning_explain.dashboard.data.Logdir`): a bad one gets a 4xx and ``{"error": message}``, never a
traceback.

- ``index.js``, ``style.css``: the front-end.
- ``runs``: the runs with explained epochs and a version per run (polled every few seconds; it only grows).
- ``run?run=R``: one run's views (method, rows, columns, ``[[epoch, step], ...]``), captions, alerts, layer.
- ``charts?run=R&tag=T``: the focus, drift and faithfulness charts of the method of view ``T``.
- ``numbers?run=R&tag=T&epoch=E``: each probe image's numbers at epoch ``E`` (the charts' hover).
- ``tile?run=R&tag=T&step=S&part=maps|input``: one film-strip column as a PNG: every probe image's maps (or input)
  at one step, stacked (what the film strip shows; one request per explained epoch).
- ``cell?run=R&tag=T&step=S&row=I&col=J``: one cell of one logged grid as a PNG (column 0 is the input).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from tensorboard.plugins import base_plugin
from werkzeug import Request, Response

from lightning_explain.dashboard.data import ApiError, Logdir

__all__ = ["PLUGIN_NAME", "ExplainPlugin", "static_asset"]

#: The plugin's name: its routes live under ``/data/plugin/<PLUGIN_NAME>/``.
PLUGIN_NAME = "lightning_explain"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_log = logging.getLogger(__name__)


def static_asset(name: str) -> str:
    """The text of a front-end file shipped in ``lightning_explain/dashboard/static``."""
    return files("lightning_explain.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status=status, content_type="application/json")


class ExplainPlugin(base_plugin.TBPlugin):  # type: ignore[misc]
    """The Explain tab (see the module docstring). TensorBoard builds it with its :class:`TBContext`."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        super().__init__(context)
        logdir = getattr(context, "logdir", None) or getattr(getattr(context, "flags", None), "logdir", None)
        self._data = Logdir(logdir) if logdir else None

    def is_active(self) -> bool:
        """True when a run under the log dir holds grids logged by this package's callbacks."""
        return self._data is not None and self._data.has_data()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Explain", disable_reload=True)

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        return {
            "/index.js": self._static("index.js"),
            "/explain.js": self._static("explain.js"),
            "/style.css": self._static("style.css"),
            "/runs": self._api(lambda data, args: data.runs()),
            "/run": self._api(lambda data, args: data.run(args.get("run"))),
            "/charts": self._api(lambda data, args: data.charts(args.get("run"), args.get("tag"))),
            "/numbers": self._api(lambda data, args: data.numbers(args.get("run"), args.get("tag"), args.get("epoch"))),
            "/cell": self._png(
                lambda data, a: data.cell(a.get("run"), a.get("tag"), a.get("step"), a.get("row"), a.get("col"))
            ),
            "/tile": self._png(lambda data, a: data.tile(a.get("run"), a.get("tag"), a.get("step"), a.get("part"))),
        }

    @staticmethod
    def _static(name: str) -> Callable[..., Any]:
        suffix = name[name.rfind(".") :]

        @Request.application  # type: ignore[misc]
        def serve(request: Request) -> Response:
            return Response(static_asset(name), content_type=_TYPES[suffix])

        return serve

    def _api(self, query: Callable[[Logdir, Any], Any]) -> Callable[..., Any]:
        """A JSON route answering ``query(logdir, args)``."""
        return self._route(query, _json)

    def _png(self, query: Callable[[Logdir, Any], bytes]) -> Callable[..., Any]:
        """A PNG route answering ``query(logdir, args)``; the browser may keep it (a step's grid never changes)."""

        def respond(png: bytes) -> Response:
            response = Response(png, content_type="image/png")
            response.headers["Cache-Control"] = "private, max-age=86400"
            return response

        return self._route(query, respond)

    def _route(self, query: Callable[[Logdir, Any], Any], respond: Callable[[Any], Response]) -> Callable[..., Any]:
        """A route: ``respond(query(logdir, args))``; a refused query is its 4xx with ``{"error": message}``, a bug
        of ours a 500 with one line (the traceback goes to TensorBoard's log, never on the wire)."""

        @Request.application  # type: ignore[misc]
        def serve(request: Request) -> Response:
            if self._data is None:
                return _json({"error": "TensorBoard was started without --logdir: nothing to show."}, 400)
            try:
                answer = query(self._data, request.args)
            except ApiError as err:
                return _json({"error": err.message}, err.status)
            except Exception as err:
                _log.exception("lightning_explain dashboard: %s failed", request.path)
                return _json({"error": f"internal error: {type(err).__name__}"}, 500)
            return respond(answer)

        return serve
