"""One self-contained HTML file from a TensorBoard log dir: every method's maps across epochs, with sliders.

``lightning-explain report LOGDIR -o report.html`` (or :func:`write_report`) reads the event files with
TensorBoard's own reader and writes one HTML file that needs no network when viewed: the images are
base64 ``data:`` URIs, the CSS and the script are inline, and the curves are inline SVG.

For each run (a folder holding event files) and each image tag that :class:`~lightning_explain.ExplainCallback`
logged, the report shows one tile per probe image (its row of the grid: caption band, input and overlays) and
a slider over the logged epochs; a slider at the top moves every method at once. Rows are cut out of the
logged grids with the ``{tag_prefix}/layout`` text that the callback logs with each epoch's grids (see
:class:`~lightning_explain.output.render.GridLayout`); a grid without a matching layout (older logs, other tags) is
shown whole. Below each method: its drift and focus scalars (``{tag_prefix}/{method}/drift/*`` and
``/focus/*``) against the epoch, grouped as in :data:`lightning_explain.output.charts.CHARTS` (the same charts as
TensorBoard's Custom Scalars tab), with a marker at the epoch the slider shows.

One job per module: :mod:`~lightning_explain.report.events` reads the event files,
:mod:`~lightning_explain.report.page` writes the HTML (with ``report.css`` and ``report.js``, package data),
:mod:`~lightning_explain.report.svg` draws the charts and :mod:`~lightning_explain.report.build` writes the file.

Example:
    >>> from lightning_explain.report import find_runs, nice_ticks
    >>> find_runs("/nonexistent"), nice_ticks(0.0, 2.0, 2)
    ([], [0.0, 1.0, 2.0])
"""

from __future__ import annotations

from lightning_explain.report.build import write_report
from lightning_explain.report.events import Frame, RunData, find_runs, read_run
from lightning_explain.report.page import render_html
from lightning_explain.report.svg import line_chart, nice_ticks

__all__ = ["Frame", "RunData", "find_runs", "line_chart", "nice_ticks", "read_run", "render_html", "write_report"]
