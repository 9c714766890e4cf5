"""The Explain tab in a real headless Chromium, served by a real TensorBoard on a run written by a real Trainer:
the tab, the film strip's shape and pixels, the method switch, the alert marks, the large view, live epochs,
the empty state and two runs aligned by epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _shared import ALERT_EPOCH, CELL, EPOCHS, PROBE, empty_site, enlarged, logged_grids, trained_logdir
from _shared import site as shared_site
from conftest import CHROMIUM_ARGS

from lightning_explain.output.render import grid_layout

#: How long a new epoch may take to appear: the page polls every 5 s, the plugin rescans the disk every second.
LIVE_TIMEOUT_MS = 5000 + 1000 + 4000

PIXELS_JS = """(img) => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];
}"""


@pytest.fixture(scope="module")
def site() -> dict[str, Any]:
    return shared_site()


@pytest.fixture(scope="module")
def page(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15000)
        yield page
        browser.close()


def _open(page: Any, site: dict[str, Any], run: str = "tiny/a") -> Any:
    page.goto("about:blank")
    page.goto(f"{site['server'].url}/#lightning_explain")
    frame = page.frame_locator("iframe")
    frame.locator("select.lx-run").select_option(run)
    frame.locator(f'.lx-strip[data-run="{run}"] img.lx-tile').first.wait_for()
    return frame


def _cell_pixels(frame: Any, selector: str, row: int) -> np.ndarray:
    """The pixels the film-strip column ``selector`` (one image: every probe image's map, stacked) shows for probe
    image ``row``: its ``row``-th band of equal height."""
    img = frame.locator(selector)
    img.scroll_into_view_if_needed()
    img.evaluate("(el) => el.decode()")
    width, height, data = img.evaluate(PIXELS_JS)
    pixels = np.asarray(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]
    assert height % PROBE == 0, f"a column of {PROBE} images is {height} px tall"
    band = height // PROBE
    return pixels[row * band : (row + 1) * band]


def test_the_tab_appears_and_the_strip_is_images_by_epochs(page, site):
    frame = _open(page, site)
    assert page.get_by_text("Explain", exact=True).first.is_visible()  # TensorBoard's tab bar
    strip = frame.locator('.lx-strip[data-run="tiny/a"]')
    assert strip.locator(".lx-caption").count() == PROBE  # a row per probe image
    epochs = [int(e) for e in strip.locator("th.lx-epoch").evaluate_all("(ths) => ths.map(t => t.dataset.epoch)")]
    assert epochs == list(range(EPOCHS))
    assert strip.locator("img.lx-tile:not(.lx-in)").count() == EPOCHS  # a column per epoch
    assert strip.locator("img.lx-in").count() == 1  # the inputs once
    # Every column is PROBE cells tall and one Grad-CAM map wide, the rows level with the captions.
    captions = strip.locator(".lx-caption")
    tile = strip.locator('img.lx-tile[data-epoch="0"]').bounding_box()
    cell = tile["width"]
    assert abs(tile["height"] - PROBE * cell) < 1
    for r in range(PROBE):
        assert abs(captions.nth(r).bounding_box()["y"] - (tile["y"] + r * cell)) < 1
    caption = captions.first.text_content()
    assert caption.startswith("#0 true ") and "predicted" in caption


def test_a_cell_shows_the_logged_pixels_and_the_method_switch_changes_them(page, site):
    frame = _open(page, site)
    grids = logged_grids(trained_logdir() / "tiny" / "a", "explain/gradcam")
    steps = sorted(grids)
    probe_size = (16, 16)
    for epoch, row in ((0, 0), (EPOCHS - 1, PROBE - 1)):
        grid = grids[steps[epoch]]
        layout = grid_layout(grid.shape[:2], probe_size, CELL)
        top, left, bottom, right = layout.cell_box(row, 1)
        shown = _cell_pixels(frame, f'.lx-strip[data-run="tiny/a"] img.lx-tile[data-epoch="{epoch}"]', row)
        logged = grid[top:bottom, left:right]
        assert np.array_equal(enlarged(shown, logged.shape), logged), f"epoch {epoch}, row {row}"
    gradcam = _cell_pixels(frame, '.lx-strip[data-run="tiny/a"] img.lx-tile[data-epoch="0"]', 0)
    frame.locator("select.lx-method").select_option("saliency")
    frame.locator('.lx-strip[data-run="tiny/a"] h3', has_text="saliency").wait_for()
    saliency = _cell_pixels(frame, '.lx-strip[data-run="tiny/a"] img.lx-tile[data-epoch="0"]', 0)
    grid = logged_grids(trained_logdir() / "tiny" / "a", "explain/saliency")[steps[0]]
    top, left, bottom, right = grid_layout(grid.shape[:2], probe_size, CELL).cell_box(0, 1)
    assert np.array_equal(enlarged(saliency, (CELL, CELL)), grid[top:bottom, left:right])
    assert not np.array_equal(saliency, gradcam)


def test_the_alert_epoch_is_marked_on_the_strip_and_the_charts(page, site):
    frame = _open(page, site)
    strip = frame.locator('.lx-strip[data-run="tiny/a"]')
    marked = strip.locator("th.lx-epoch.lx-alert")
    assert marked.count() == 1 and marked.get_attribute("data-epoch") == str(ALERT_EPOCH)
    assert "alert" in marked.text_content()
    assert strip.locator(f'td.lx-slot.lx-alert[data-epoch="{ALERT_EPOCH}"]').count() == 1
    frame.locator("svg.lx-chart").first.wait_for()
    lines = frame.locator("svg.lx-chart .lx-alert-line")
    assert lines.count() >= 2 and {lines.nth(i).get_attribute("data-epoch") for i in range(lines.count())} == {
        str(ALERT_EPOCH)
    }
    # A click on a chart selects that epoch: the strip's column is highlighted and scrolled to.
    chart = frame.locator("svg.lx-chart").first
    box = chart.bounding_box()
    chart.click(position={"x": box["width"] - 92 - 2, "y": box["height"] / 2})  # the right end: the last epoch
    assert strip.locator("th.lx-selected").get_attribute("data-epoch") == str(EPOCHS - 1)


def test_the_large_view_has_the_caption_and_moves_with_the_keys(page, site):
    frame = _open(page, site)
    tile = frame.locator('.lx-strip[data-run="tiny/a"] img.lx-tile[data-epoch="1"]')
    box = tile.bounding_box()
    tile.click(position={"x": box["width"] / 2, "y": box["height"] * 1.5 / PROBE})  # the second probe image
    modal = frame.locator(".lx-modal")
    assert modal.get_attribute("data-epoch") == "1" and modal.get_attribute("data-row") == "1"
    # The large view shows that cell: the column's second band, from the same image (no other request).
    big = modal.locator(".lx-main .lx-cells .lx-cellview").first
    assert big.get_attribute("data-row") == "1"
    style = big.evaluate("(el) => [getComputedStyle(el).backgroundImage, getComputedStyle(el).backgroundPositionY]")
    assert tile.get_attribute("src") in style[0] and abs(float(style[1].rstrip("%")) - 100 / (PROBE - 1)) < 1e-3
    caption = modal.locator(".lx-big-caption").text_content()
    assert "true " in caption and "predicted " in caption
    assert modal.locator(".lx-side figcaption").all_text_contents() == ["previous: epoch 0", "next: epoch 2"]
    page.keyboard.press("ArrowRight")
    assert frame.locator(".lx-modal").get_attribute("data-epoch") == "2"
    assert frame.locator(".lx-modal .lx-none").text_content() == "no next epoch"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert frame.locator(".lx-modal").get_attribute("data-epoch") == "0"
    page.keyboard.press("Escape")
    assert frame.locator(".lx-modal").count() == 0


def test_two_runs_side_by_side_are_aligned_by_epoch(page, site):
    frame = _open(page, site)
    frame.locator("select.lx-run-b").select_option("tiny/b")
    second = frame.locator('.lx-strip[data-run="tiny/b"]')
    second.wait_for()
    first = frame.locator('.lx-strip[data-run="tiny/a"]')
    for e in range(EPOCHS):
        a = first.locator(f'th.lx-epoch[data-epoch="{e}"]').bounding_box()
        b = second.locator(f'th.lx-epoch[data-epoch="{e}"]').bounding_box()
        assert abs(a["x"] - b["x"]) < 1 and abs(a["width"] - b["width"]) < 1, f"epoch {e} is not aligned"
    # tiny/b trained one epoch less: its last column is there, empty.
    assert second.locator(f'td.lx-slot[data-epoch="{EPOCHS - 1}"] img').count() == 0
    assert second.locator(f'td.lx-slot[data-epoch="{EPOCHS - 1}"] .lx-missing').count() == 1
    assert second.locator(f'td.lx-slot[data-epoch="{EPOCHS - 2}"] img.lx-tile').count() == 1


def test_a_run_that_gains_an_epoch_shows_it_while_the_page_is_open(page, site):
    target, data, cut = site["live"]
    frame = _open(page, site, "live/a")
    strip = frame.locator('.lx-strip[data-run="live/a"]')
    assert strip.locator("th.lx-epoch").count() == EPOCHS - 1
    with target.open("ab") as f:
        f.write(data[cut:])
    strip.locator(f'th.lx-epoch[data-epoch="{EPOCHS - 1}"]').wait_for(timeout=LIVE_TIMEOUT_MS)
    assert strip.locator(f'img.lx-tile[data-epoch="{EPOCHS - 1}"]').count() == 1


def test_a_logdir_without_our_data_shows_the_empty_state(page):
    page.goto(f"{empty_site().url}/data/plugin_entry.html?name=lightning_explain")
    empty = page.locator(".lx-empty")
    empty.wait_for()
    text = empty.text_content()
    assert "No explained epochs" in text and "ExplainCallback()" in text and "1 run(s)" in text
