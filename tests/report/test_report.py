"""The HTML report and the console command: real event files in, one self-contained HTML file out."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from conftest import RUN_CELL, RUN_EPOCHS, RUN_PROBE, probe_rows_match, read_event_images
from PIL import Image

from lightning_explain.output.render import GridLayout
from lightning_explain.report import line_chart, nice_ticks, read_run, render_html, write_report
from lightning_explain.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("activations", "gradcam", "saliency")


def _sections(text: str) -> dict[str, list[dict[str, Any]]]:
    """tag -> the frames (label, src, rows, width, x) that the page's script shows."""
    out = {}
    for tag, frames in re.findall(
        r'<section class="method" id="m\d+" data-tag="([^"]+)" data-frames=\'([^\']+)\'', text
    ):
        out[unescape(tag)] = json.loads(unescape(frames))
    sources = _sources(text)
    for frames in out.values():
        for frame in frames:
            frame["src"] = sources[frame["source"]]
    return out


def _sources(text: str) -> list[str]:
    """The data URIs the page stores once (the tiles' <img> get theirs from the script)."""
    found = re.search(r'<script type="application/json" id="sources">(.*?)</script>', text)
    assert found is not None
    return list(json.loads(found.group(1)))


def _png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def report(explained_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(explained_run["root"], out, quiet=True)
    return out, out.read_text(encoding="utf-8")


def _data(text: str) -> dict[str, Any]:
    """The data API's answers the report inlines (``json``, ``tiles``, ``images``; see dashboard.offline)."""
    found = re.search(r'<script type="application/json" id="lx-data">(.*?)</script>', text, re.S)
    assert found is not None
    return json.loads(found.group(1).replace("<\\/", "</"))


def _enlarged(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A stored cell (at its image's own size) as the page shows it in a cell of ``shape`` (pixelated)."""
    fh, fw = shape[0] // pixels.shape[0], shape[1] // pixels.shape[1]
    return np.repeat(np.repeat(pixels, fh, axis=0), fw, axis=1)


def _tile(data: dict[str, Any], key: str) -> np.ndarray:
    """The film-strip column stored under ``key`` (``tile?run=...&part=...``), decoded."""
    return _png(data["images"][data["tiles"][key]])


def _cell(tile: np.ndarray, row: int, col: int, span: int) -> np.ndarray:
    """Cell ``(row, col)`` of a column of ``RUN_PROBE`` rows of ``span`` cells each."""
    h, w = tile.shape[0] // RUN_PROBE, tile.shape[1] // span
    return tile[row * h : (row + 1) * h, col * w : (col + 1) * w]


RUN = "tiny/v0"


def test_report_shows_every_method_and_epoch_with_the_logged_pixels(explained_run, report):
    _, text = report
    data = _data(text)
    logged = read_event_images(explained_run["log_dir"])
    assert [r["name"] for r in data["json"]["runs?"]["runs"]] == [RUN]
    views = {v["tag"]: v for v in data["json"][f"run?run={RUN}"]["views"]}
    assert set(views) == {f"explain/{m}" for m in METHODS}
    for tag, view in views.items():
        assert [e for e, _ in view["frames"]] == list(range(RUN_EPOCHS))
        for (_, step), (logged_step, pixels) in zip(view["frames"], logged[tag], strict=True):
            assert step == logged_step
            layout = _grid_layout(pixels)
            tile = _tile(data, f"tile?run={RUN}&tag={tag}&step={step}&part=maps")
            for row in range(RUN_PROBE):
                for col in range(1, view["columns"]):
                    top, left, bottom, right = layout.cell_box(row, col)
                    cell = pixels[top:bottom, left:right]
                    shown = _cell(tile, row, col - 1, view["columns"] - 1)
                    assert np.array_equal(_enlarged(shown, cell.shape), cell)  # the very pixels the callback logged


def _grid_layout(grid: np.ndarray) -> GridLayout:
    from lightning_explain.output.render import grid_layout

    layout = grid_layout(grid.shape[:2], (16, 16), RUN_CELL)
    assert layout is not None
    return layout


def test_report_stores_each_input_once(explained_run, report):
    _, text = report
    data = _data(text)
    inputs = {key: index for key, index in data["tiles"].items() if key.endswith("&part=input")}
    assert len(inputs) == len(METHODS)  # one inputs column per view (the newest epoch's) ...
    assert len(set(inputs.values())) == 1  # ... stored once: every view shows the same inputs
    assert len(data["images"]) == len(set(data["images"]))  # no image stored twice
    step, grid = read_event_images(explained_run["log_dir"])["explain/gradcam"][-1]
    tile = _tile(data, f"tile?run={RUN}&tag=explain/gradcam&step={step}&part=input")
    for row in range(RUN_PROBE):
        top, left, bottom, right = _grid_layout(grid).cell_box(row, 0)
        shown = _enlarged(_cell(tile, row, 0, 1), (bottom - top, right - left))
        assert np.array_equal(shown, grid[top:bottom, left:right])
    probe_rows_match(grid, explained_run["probe"], RUN_CELL)


def test_report_is_self_contained(report):
    path, text = report
    bare = text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
    assert "http://" not in bare and "https://" not in bare
    assert "<script src" not in text and "<link" not in text and "<img" not in text  # images come from the data
    data = _data(text)
    assert all(uri.startswith("data:image/png;base64,") for uri in data["images"])
    assert path.stat().st_size < 3_000_000


def test_report_draws_the_drift_and_focus_curves(report):
    _, text = report
    data = _data(text)["json"]
    for method in ("gradcam", "saliency"):
        charts = data[f"charts?run={RUN}&tag=explain/{method}"]["charts"]
        assert [c["title"] for c in charts] == [
            "drift: distance (image sides)",
            "drift: similarity",
            "focus on the cue and the border",
        ]
        assert {"emd_prev", "emd_chance"} <= set(charts[0]["series"])
        assert "border_lift" in charts[2]["series"]  # no masks in this run: only the border numbers
        assert [x for x, _ in charts[0]["series"]["emd_chance"]] == list(range(RUN_EPOCHS))  # one point per epoch
        numbers = data[f"numbers?run={RUN}&tag=explain/{method}&epoch=1"]["numbers"]
        assert len(numbers["focus/border_lift"]) == RUN_PROBE  # each image's own numbers, for the hover
    assert data[f"charts?run={RUN}&tag=explain/activations"]["charts"] == []  # no scalars for the activations view


def test_a_grid_without_layout_is_shown_whole(explained_run, tmp_path):
    run = read_run(explained_run["log_dir"])
    frame = run.images["explain/gradcam"][0]
    assert len(frame.rows) == RUN_PROBE
    for frames in run.images.values():
        for f in frames:
            f.rows, f.cut = [(0, f.size[0])], False
    sections = _sections(render_html([run], "t"))
    assert all(len(f["rows"]) == 1 and f["rows"][0] == [0, frame.size[0]] for f in sections["explain/gradcam"])
    assert "whole grid (no layout logged)" in render_html([run], "t")


def test_layout_matches_grid_geometry():
    layout = GridLayout(rows=3, columns=2, cell_height=32, cell_width=32, band=12)
    assert layout.size == (3 * 46 + 2, 2 * 34 + 2)
    assert layout.row_box(2) == (94, 0, 138, 70) and layout.cell_box(2, 1) == (106, 36, 138, 68)


def test_svg_chart_and_ticks():
    assert nice_ticks(0, 10, 8) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 3, 8) == [0, 0.5, 1, 1.5, 2, 2.5, 3] and nice_ticks(0, 3, 8, min_step=1.0) == [0, 1, 2, 3]
    svg = line_chart("t", {"a": [(0.0, 1.0), (2.0, 3.0)], "b": [(1.0, 2.0)]})
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3 and 'class="marker"' in svg


def test_cli_report_writes_the_file_and_shows_progress(explained_run, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(explained_run["root"]), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.is_file() and str(out) in captured.out
    assert "reading and cutting the grids [" in captured.err and "tiny/v0: explain/saliency" in captured.err
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "x.html")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err


def test_console_entry_point_and_python_m():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"lightning-explain": "lightning_explain.tools.cli:main"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "lightning_explain", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "demo" in done.stdout and "report" in done.stdout


def test_cli_demo_trains_and_writes_the_report(tmp_path, capsys):
    report = tmp_path / "demo.html"
    args = ["--out", str(tmp_path), "--epochs", "1", "--train-size", "64", "--image-size", "32", "--quiet"]
    assert main(["demo", *args, "--report", str(report)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == {"shortcut", "clean"}
    data = _data(report.read_text())["json"]
    runs = [r["name"] for r in data["runs?"]["runs"]]
    assert sorted(runs) == ["clean/seed0", "shortcut/seed0"]
    views = {v["method"] for v in data["run?run=shortcut/seed0"]["views"]}
    assert views == {"gradcam", "saliency", "activations"}
    # With object and cue masks, the focus chart has the object and cue numbers.
    charts = {c["title"]: c for c in data["charts?run=shortcut/seed0&tag=explain/gradcam"]["charts"]}
    assert "lift" in charts["focus on the object"]["series"]
    assert "energy_in_cue" in charts["focus on the cue and the border"]["series"]
    assert "HTML report:" in capsys.readouterr().out


def test_report_in_the_browser_shows_the_film_strip(report, browser):
    path, _ = report
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(path.as_uri())
    strip = page.locator(f'.lx-strip[data-run="{RUN}"]')
    strip.locator("img.lx-tile").first.wait_for()
    assert strip.locator(".lx-caption").count() == RUN_PROBE
    assert strip.locator("th.lx-epoch").count() == RUN_EPOCHS
    assert strip.locator("img.lx-tile:not(.lx-in)").count() == RUN_EPOCHS  # one column image per epoch
    first = strip.locator('img.lx-tile[data-epoch="0"]')
    first.evaluate("(el) => el.decode()")
    assert first.evaluate("(el) => [el.complete, el.naturalWidth > 0, el.src.startsWith('data:image/png')]") == [
        True,
        True,
        True,
    ]
    # The same large view as in TensorBoard: previous and next epoch, keys move through the epochs.
    first.click()
    modal = page.locator(".lx-modal")
    assert modal.get_attribute("data-epoch") == "0"
    # The large view's input and maps come from images the page holds (the input from the inputs' column).
    for cell in (modal.locator(".lx-input-big"), modal.locator(".lx-main .lx-cells .lx-cellview").first):
        assert cell.evaluate("(el) => getComputedStyle(el).backgroundImage").startswith('url("data:image/png;base64,')
    page.keyboard.press("ArrowRight")
    assert page.locator(".lx-modal").get_attribute("data-epoch") == "1"
    page.keyboard.press("Escape")
    # The method switch and the charts.
    page.locator("select.lx-method").select_option("saliency")
    strip.locator("h3", has_text="saliency").wait_for()
    assert page.locator("svg.lx-chart").count() == 3
    assert not errors, errors


def test_a_single_probe_image_is_one_cut_row(explained_run):
    run = read_run(explained_run["log_dir"])
    frames = run.images["explain/gradcam"]
    for f in frames:
        f.rows = f.rows[:1]
    run.images = {"explain/gradcam": frames}
    text = render_html([run], "t")
    assert "probe image #0" in text and "whole grid" not in text and "probe image #1" not in text


def _wide_run(folder: Path, rows: int = 3, epochs: int = 2) -> None:
    """A run as ExplainCallback logs it, of probe images twice as wide as tall (16 x 32 px), 32 px cells."""
    import torch
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from torch.utils.tensorboard.summary import image, text

    from lightning_explain.epoch.grids import layout_json
    from lightning_explain.output.render import explanation_grid

    generator = torch.Generator().manual_seed(0)
    display = torch.rand(rows, 3, 16, 32, generator=generator)
    writer = EventFileWriter(str(folder))
    for epoch in range(epochs):
        maps = torch.rand(rows, 16, 32, generator=generator)
        grid = explanation_grid(display, maps, [f"#{r}" for r in range(rows)], cell_size=32)
        layout = layout_json({"explain/gradcam": grid}, (16, 32), 32, epoch, epoch)
        for summary in (text("explain/layout", layout), image("explain/gradcam", grid, dataformats="CHW")):
            writer.add_event(Event(step=epoch, summary=summary))
    writer.close()


def test_the_film_strip_keeps_the_shape_of_images_that_are_not_square(tmp_path, browser):
    _wide_run(tmp_path / "logs" / "wide")
    out = write_report(tmp_path / "logs", tmp_path / "report.html", quiet=True)
    page = browser.new_page()
    page.goto(out.as_uri())
    strip = page.locator('.lx-strip[data-run="wide"]')
    tile = strip.locator('img.lx-tile[data-epoch="1"]')
    tile.evaluate("(el) => el.decode()")
    box = tile.bounding_box()
    cell = strip.locator(".lx-caption").first.bounding_box()["height"]  # one probe image's row
    assert abs(box["height"] - 3 * cell) < 1 and abs(box["width"] - 2 * cell) < 1  # 16 x 32 px images: 1 x 2 cells
    natural = tile.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
    assert natural[0] * 3 == natural[1] * 2  # the stored column: 3 rows of 2:1 cells
    inputs = strip.locator("img.lx-in").bounding_box()
    assert abs(inputs["width"] - 2 * cell) < 1
    tile.click(position={"x": box["width"] / 2, "y": cell * 2.5})
    big = page.locator(".lx-modal .lx-main .lx-cells .lx-cellview").first
    size = big.bounding_box()
    assert abs(size["width"] - 2 * size["height"]) < 1.5  # the large view keeps the shape too
    assert page.locator(".lx-modal").get_attribute("data-row") == "2"
