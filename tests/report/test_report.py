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


def test_report_shows_every_method_and_epoch_with_the_logged_pixels(explained_run, report):
    _, text = report
    logged = read_event_images(explained_run["log_dir"])
    sections = _sections(text)
    assert set(sections) == {f"explain/{m}" for m in METHODS}
    for tag, frames in sections.items():
        assert [f["label"].split(" (")[0] for f in frames] == [f"epoch {e}" for e in range(RUN_EPOCHS)]
        assert [f["x"] for f in frames] == list(range(RUN_EPOCHS))
        for frame, (_, pixels) in zip(frames, logged[tag], strict=True):
            assert np.array_equal(_png(frame["src"]), pixels)  # the very image the callback logged
            assert frame["width"] == pixels.shape[1]


def test_report_cuts_one_row_per_probe_image(explained_run, report):
    _, text = report
    for tag, frames in _sections(text).items():
        for frame in frames:
            grid = _png(frame["src"])
            assert len(frame["rows"]) == RUN_PROBE, tag
            probe_rows_match(grid, explained_run["probe"], RUN_CELL)
            # Each row box [top, top + height) holds the row's caption band and its cells and nothing else:
            # the rows tile the grid with the 2 px padding between them.
            tops = [top for top, _ in frame["rows"]]
            heights = {height for _, height in frame["rows"]}
            assert len(heights) == 1 and tops[0] == 2
            assert np.diff(tops).tolist() == [heights.pop() + 2] * (RUN_PROBE - 1)
            assert (grid[: tops[0]] == 255).all() and (grid[-2:] == 255).all()  # padding outside the rows


def test_report_is_self_contained(report):
    path, text = report
    assert "http://" not in text and "https://" not in text and "//" not in re.sub(r"data:[^\"']+", "", text)
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', text):
        assert value.startswith("data:image/png;base64,"), (attr, value[:40])
    sources = _sources(text)
    assert len(sources) == 3 * RUN_EPOCHS and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script src" not in text and "<link" not in text
    assert path.stat().st_size < 3_000_000


def test_report_draws_the_drift_and_focus_curves(report):
    _, text = report
    for method in ("gradcam", "saliency"):
        section = text.split(f'data-tag="explain/{method}"', 1)[1].split("</section>", 1)[0]
        charts = re.findall(r'<svg class="chart".*?</svg>', section)
        titles = [re.search(r'font-weight="600">([^<]+)<', c).group(1) for c in charts]  # type: ignore[union-attr]
        assert titles == ["drift: distance (image sides)", "drift: similarity", "focus on the cue and the border"]
        assert ">emd_prev<" in charts[0] and ">emd_chance<" in charts[0]
        assert ">border_lift<" in charts[2]  # no masks in this run: only the border numbers
        # One polyline per series, one point per explained epoch (emd_prev: from the second epoch on).
        polylines = re.findall(r'points="([^"]+)"', charts[0])
        assert max(len(p.split()) for p in polylines) == RUN_EPOCHS
    activations = text.split('data-tag="explain/activations"', 1)[1].split("</section>", 1)[0]
    assert "<svg" not in activations  # no scalars for the activations view


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
    assert "reading events [" in captured.err and "rendering [" in captured.err and "3/3" in captured.err
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
    text = report.read_text()
    assert set(_sections(text)) == {"explain/gradcam", "explain/saliency", "explain/activations"}
    assert "<h2>shortcut/seed0</h2>" in text and "<h2>clean/seed0</h2>" in text
    # With object and cue masks, the focus chart has the object and cue numbers.
    assert ">lift<" in text and ">energy_in_cue<" in text and "focus on the object" in text
    assert "HTML report:" in capsys.readouterr().out


def test_report_in_the_browser_moves_with_the_slider(report, browser):
    path, _ = report
    page = browser.new_page()
    page.goto(path.as_uri())
    section = page.locator('section[data-tag="explain/gradcam"]')
    label, slider, img = section.locator(".epoch-label"), section.locator("input.slider"), section.locator("img").first
    assert label.text_content().startswith(f"epoch {RUN_EPOCHS - 1} ")
    last_src = img.get_attribute("src")
    slider.focus()
    page.keyboard.press("Home")
    assert label.text_content().startswith("epoch 0 ")
    first_src = img.get_attribute("src")
    assert first_src != last_src
    page.keyboard.press("ArrowRight")
    assert label.text_content().startswith("epoch 1 ")
    # Setting the value and firing an input event works too; every probe-image tile follows.
    slider.evaluate("(el) => { el.value = 5; el.dispatchEvent(new Event('input')); }")
    assert label.text_content().startswith("epoch 5 ")
    srcs = {section.locator("img").nth(r).get_attribute("src") for r in range(RUN_PROBE)}
    assert len(srcs) == 1 and srcs.pop() not in (first_src, last_src)
    # The images are shown: decoded, and each tile crops one row of the grid.
    sizes = section.locator("img").first.evaluate("(el) => [el.complete, el.naturalWidth, el.naturalHeight]")
    assert sizes[0] and sizes[1] > 0
    tile = section.locator(".crop").nth(1).bounding_box()
    assert tile is not None and tile["height"] < sizes[2] / 2
    # The global slider moves every method; the curve marker follows.
    page.locator("#all-epochs").evaluate("(el) => { el.value = 2; el.dispatchEvent(new Event('input')); }")
    for tag in ("explain/gradcam", "explain/saliency", "explain/activations"):
        assert page.locator(f'section[data-tag="{tag}"] .epoch-label').text_content().startswith("epoch 2 ")
    marker = section.locator("svg.chart .marker").first
    assert marker.evaluate("(el) => el.style.display") == "" and float(marker.get_attribute("x1")) > 0


def test_a_single_probe_image_is_one_cut_row(explained_run):
    run = read_run(explained_run["log_dir"])
    frames = run.images["explain/gradcam"]
    for f in frames:
        f.rows = f.rows[:1]
    run.images = {"explain/gradcam": frames}
    text = render_html([run], "t")
    assert "probe image #0" in text and "whole grid" not in text and "probe image #1" not in text
