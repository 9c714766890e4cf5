"""The Explain plugin in a real TensorBoard server: loaded through the installed entry point, its data API on a run
written by a real Trainer, and every route's answer to bad input (a 4xx with a message, never a traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from _shared import (
    ALERT_EPOCH,
    CELL,
    EPOCHS,
    PROBE,
    Server,
    empty_site,
    enlarged,
    event_file,
    logged_grids,
    png_pixels,
    records,
    site,
    trained_logdir,
)

from lightning_explain.dashboard.data import Logdir
from lightning_explain.output.render import GridLayout

API = "/data/plugin/lightning_explain"


@pytest.fixture(scope="module")
def server() -> Server:
    return site()["server"]


def test_the_plugin_is_found_through_the_installed_entry_point(server):
    points = [e for e in metadata.entry_points().select(group="tensorboard_plugins") if e.name == "lightning_explain"]
    assert [p.value for p in points] == ["lightning_explain.dashboard.plugin:ExplainPlugin"], (
        "the editable install does not declare the entry point: pip install -e . again"
    )
    listing = server.json("/data/plugins_listing")
    ours = listing["lightning_explain"]
    assert ours["enabled"] and ours["tab_name"] == "Explain"
    assert ours["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{API}/index.js"}
    # TensorBoard's own dashboards keep working on the same run.
    assert listing["scalars"]["enabled"] and listing["images"]["enabled"]
    status, body, kind = server.get(f"{API}/index.js")
    assert status == 200 and "javascript" in kind and b"export async function render" in body
    status, body, kind = server.get(f"{API}/explain.js")
    assert status == 200 and b"class Dashboard" in body
    assert server.get(f"{API}/style.css")[0] == 200


def test_runs_views_captions_and_alert(server):
    runs = server.json(f"{API}/runs")
    assert [r["name"] for r in runs["runs"]] == ["live/a", "tiny/a", "tiny/b"]
    run = server.json(f"{API}/run?run=tiny/a")
    views = {v["method"]: v for v in run["views"]}
    assert set(views) == {"gradcam", "saliency", "activations"}
    assert views["gradcam"]["rows"] == PROBE and views["gradcam"]["columns"] == 2
    assert [e for e, _ in views["gradcam"]["frames"]] == list(range(EPOCHS))
    assert run["alerts"] == [{"name": "explain/gradcam/focus/border_lift", "epoch": ALERT_EPOCH}]
    caption = run["captions"]["0"][0]
    assert set(caption) == {"label", "prediction", "explained"} and caption["prediction"] in {"0", "1", "2"}
    assert "features.3" in run["layer"]
    short = server.json(f"{API}/run?run=tiny/b")
    assert [e for e, _ in short["views"][0]["frames"]] == list(range(EPOCHS - 1))


def test_a_cell_is_the_logged_grid_cut_by_its_layout(server):
    log = trained_logdir() / "tiny" / "a"
    grids = logged_grids(log, "explain/gradcam")
    run = server.json(f"{API}/run?run=tiny/a")
    frames = next(v for v in run["views"] if v["method"] == "gradcam")["frames"]
    for epoch, step in frames:
        grid = grids[step]
        layout = _layout(log, step, "explain/gradcam")
        assert layout.size == grid.shape[:2]
        for row in (0, PROBE - 1):
            for col in (0, 1):
                status, body, kind = server.get(
                    f"{API}/cell?run=tiny/a&tag=explain/gradcam&step={step}&row={row}&col={col}"
                )
                assert status == 200 and kind == "image/png"
                top, left, bottom, right = layout.cell_box(row, col)
                served = png_pixels(body)
                assert served.shape[0] < CELL  # the 16 px image's cell, without its 2x enlargement
                logged = grid[top:bottom, left:right]
                assert np.array_equal(enlarged(served, logged.shape), logged), (epoch, row, col)
    assert layout.cell_height == CELL


def test_a_tile_is_every_probe_images_cells_of_one_epoch_stacked(server):
    # What the film strip shows: one image per epoch column, row r = the r-th band; the same pixels as the cells.
    log = trained_logdir() / "tiny" / "a"
    run = server.json(f"{API}/run?run=tiny/a")
    for method, maps in (("gradcam", 1), ("activations", 3)):
        tag = f"explain/{method}"
        grids = logged_grids(log, tag)
        view = next(v for v in run["views"] if v["method"] == method)
        assert view["columns"] == maps + 1
        for _, step in view["frames"]:
            layout = _layout(log, step, tag)
            for part, columns in (("maps", range(1, maps + 1)), ("input", [0])):
                status, body, kind = server.get(f"{API}/tile?run=tiny/a&tag={tag}&step={step}&part={part}")
                assert status == 200 and kind == "image/png"
                tile = png_pixels(body)
                h, w = tile.shape[0] // PROBE, tile.shape[1] // len(columns)
                assert (h * PROBE, w * len(columns)) == tile.shape[:2] and h < CELL  # stored at the image's size
                for row in range(PROBE):
                    for k, col in enumerate(columns):
                        top, left, bottom, right = layout.cell_box(row, col)
                        logged = grids[step][top:bottom, left:right]
                        shown = tile[row * h : (row + 1) * h, k * w : (k + 1) * w]
                        assert np.array_equal(enlarged(shown, logged.shape), logged), (method, step, part, row, col)


def test_the_plugin_and_its_queries_import_neither_torch_nor_lightning():
    # TensorBoard imports every plugin at start-up: importing the package's callbacks (torch, Lightning) there
    # cost about 6 s of every TensorBoard start on this machine, for users who never open the tab.
    script = f"""
import sys
from lightning_explain.dashboard.plugin import ExplainPlugin
from lightning_explain.dashboard.data import Logdir
data = Logdir({str(trained_logdir())!r})
view = next(v for v in data.run("tiny/a")["views"] if v["method"] == "gradcam")
epoch, step = view["frames"][-1]
data.charts("tiny/a", view["tag"]), data.numbers("tiny/a", view["tag"], str(epoch))
data.tile("tiny/a", view["tag"], str(step), "maps"), data.cell("tiny/a", view["tag"], str(step), "0", "1")
print(sorted(m for m in ("torch", "lightning", "pytorch_lightning", "matplotlib") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _layout(run: Path, step: int, tag: str) -> GridLayout:
    for _, _, event in records(event_file(run)):
        for value in event.summary.value:
            if value.tag.endswith("layout/text_summary") and event.step == step:
                return GridLayout(**json.loads(value.tensor.string_val[0])["grids"][tag])
    raise AssertionError(f"no layout at step {step}")


def test_charts_and_per_image_numbers(server):
    charts = server.json(f"{API}/charts?run=tiny/a&tag=explain/gradcam")
    titles = [c["title"] for c in charts["charts"]]
    assert "drift: distance (image sides)" in titles and "focus on the cue and the border" in titles
    drift = next(c for c in charts["charts"] if c["kind"] == "drift")
    assert [x for x, _ in drift["series"]["emd_prev"]] == list(range(1, EPOCHS))  # epochs on x, not steps
    numbers = server.json(f"{API}/numbers?run=tiny/a&tag=explain/gradcam&epoch=1")["numbers"]
    assert len(numbers["focus/border_lift"]) == PROBE and len(numbers["drift/emd_prev"]) == PROBE


BAD = [
    ("run", 400, "run is missing"),
    ("run?run=nope", 404, "no run 'nope'"),
    ("run?run=../../etc", 404, "no run '../../etc'"),
    ("run?run=tiny/../tiny/a", 404, "no run 'tiny/../tiny/a'"),
    ("run?run=/etc/passwd", 404, "no run '/etc/passwd'"),
    (f"run?run={quote('tiny%2Fa')}", 404, "no run 'tiny%2Fa'"),
    (f"run?run={quote('..%2F..%2Fetc', safe='')}", 404, "no run"),
    ("run?run=tiny%5Ca", 404, "no run 'tiny\\\\a'"),
    ("charts?run=tiny/a", 400, "tag is missing"),
    ("charts?run=tiny/a&tag=explain/nope", 404, "has no view 'explain/nope'"),
    ("charts?run=tiny/a&tag=../../explain/gradcam", 404, "has no view"),
    ("numbers?run=tiny/a&tag=explain/gradcam", 400, "epoch is missing"),
    ("numbers?run=tiny/a&tag=explain/gradcam&epoch=99", 404, "has no epoch 99"),
    ("numbers?run=tiny/a&tag=explain/gradcam&epoch=-1", 400, "epoch must be a whole number"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=0", 400, "col is missing"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=2&row=0&col=0", 404, "has no image at step 2"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=-2&row=0&col=0", 400, "step must be a whole number"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=99999999999999999999&row=0&col=0", 400, "step must be"),
    (
        "cell?run=tiny/a&tag=explain/gradcam&step=1&row=-1&col=0",
        400,
        f"row must be a whole number from 0 to {PROBE - 1}",
    ),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=4&col=0", 400, f"from 0 to {PROBE - 1}; got '4'"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=99999999999&col=0", 400, "row must be"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=0&col=2", 400, "col must be a whole number from 0 to 1"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=1e3&col=0", 400, "row must be"),
    ("cell?run=tiny/a&tag=explain/gradcam&step=1&row=0x1&col=0", 400, "row must be"),
    ("cell?run=tiny/a&tag=%2Fetc%2Fpasswd&step=1&row=0&col=0", 404, "has no view '/etc/passwd'"),
    ("tile?run=tiny/a&tag=explain/gradcam&step=1", 400, "part must be 'maps' or 'input'; got 'None'"),
    ("tile?run=tiny/a&tag=explain/gradcam&step=1&part=..%2Fx", 400, "part must be 'maps' or 'input'; got '../x'"),
    ("tile?run=tiny/a&tag=explain/gradcam&step=2&part=maps", 404, "has no image at step 2"),
    ("tile?run=tiny/a&tag=explain/gradcam&step=-1&part=maps", 400, "step must be a whole number"),
    ("tile?run=tiny/../x&tag=explain/gradcam&step=1&part=maps", 404, "no run 'tiny/../x'"),
    ("tile?run=tiny/a&tag=../../explain/gradcam&step=1&part=maps", 404, "has no view"),
]


@pytest.mark.parametrize(("query", "status", "message"), BAD, ids=[q for q, _, _ in BAD])
def test_bad_input_is_a_4xx_with_a_message(server, query, status, message):
    got, body, kind = server.get(f"{API}/{query}")
    assert got == status, body
    assert kind == "application/json"
    error = json.loads(body)["error"]
    assert message in error, error
    assert "Traceback" not in error and 'File "' not in error


def test_a_truncated_event_file_serves_what_is_complete_and_grows(tmp_path):
    source = event_file(trained_logdir() / "tiny" / "a")
    data = source.read_bytes()
    spans = records(source)
    last_step = max(e.step for _, _, e in spans if any(v.WhichOneof("value") == "image" for v in e.summary.value))
    cut = min(
        start
        for start, _, e in spans
        if e.step == last_step
        and any(v.WhichOneof("value") == "image" or v.tag.endswith("layout/text_summary") for v in e.summary.value)
    )
    run = tmp_path / "live" / "a"
    run.mkdir(parents=True)
    target = run / source.name
    target.write_bytes(data[: cut + 20])  # the next record cut inside its header and payload
    logdir = Logdir(tmp_path, rescan_seconds=0)
    frames = {v["method"]: v["frames"] for v in logdir.run("live/a")["views"]}
    assert [e for e, _ in frames["gradcam"]] == list(range(EPOCHS - 1))
    step = frames["gradcam"][-1][1]
    assert png_pixels(logdir.cell("live/a", "explain/gradcam", str(step), "0", "1")).shape == (16, 16, 3)
    with target.open("ab") as f:  # training writes the rest
        f.write(data[cut + 20 :])
    frames = {v["method"]: v["frames"] for v in logdir.run("live/a")["views"]}
    assert [e for e, _ in frames["gradcam"]] == list(range(EPOCHS))
    assert logdir.runs()["runs"][0]["version"] == 2


def test_a_logdir_without_our_data_has_no_active_tab():
    tb = empty_site()
    listing = tb.json("/data/plugins_listing")
    assert listing["lightning_explain"]["enabled"] is False and listing["scalars"]["enabled"] is True
    assert tb.json(f"{API}/runs") == {"runs": [], "others": 1}
    status, body, _ = tb.get(f"{API}/run?run=other")
    assert status == 404 and "no run 'other' with explained epochs" in json.loads(body)["error"]


def test_copying_a_run_keeps_it_readable(tmp_path):
    """A run folder named with spaces and dots (but inside the log dir) is served under its relative name."""
    shutil.copytree(trained_logdir() / "tiny" / "b", tmp_path / "my run.v2")
    logdir = Logdir(tmp_path, rescan_seconds=0)
    assert [r["name"] for r in logdir.runs()["runs"]] == ["my run.v2"]
    assert logdir.run("my run.v2")["views"]
