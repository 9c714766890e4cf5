"""Hostile class names end to end: a real Trainer whose dataset's classes hold markup, TeX, a line break, 300
characters and nothing; the HTML report and TensorBoard's Explain tab opened in a real headless Chromium show them
as text and never run them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _shared import Server
from conftest import CHROMIUM_ARGS, TinyCNN, read_event_images, trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain.report import write_report

#: Folder names a user's ImageFolder may carry. The fifth closes the report's data ``<script>`` early and opens an
#: HTML comment with a ``<script`` in it (which, unescaped, makes the parser swallow the page's own module script).
NAMES = [
    "<img src=x onerror=alert(1)>",
    "$\\frac{",
    "two\nlines",
    "n" * 300,
    "</script><script>alert('lx-xss-2')</script><!--<script>",
    "",
]
RUN = "hostile/v0"
EPOCHS = 2

#: Elements or attributes that only an injected name could have made, and scripts that hold a payload.
INJECTED_JS = """() => [
  document.querySelectorAll('img[src="x"], [onerror]').length,
  Array.from(document.scripts).filter(s => s.type !== 'application/json' && s.textContent.includes('lx-xss')).length,
]"""


class NamedClasses(TensorDataset):
    """A TensorDataset with ImageFolder's ``classes`` attribute: the callback takes the class names from it."""

    classes = NAMES


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_explain import ExplainCallback

    root = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(0)
    n = 2 * len(NAMES)
    labels = torch.arange(n) % len(NAMES)
    train = DataLoader(NamedClasses(torch.rand(n, 3, 16, 16, generator=g), labels), batch_size=n)
    val = DataLoader(NamedClasses(torch.rand(n, 3, 16, 16, generator=g), labels), batch_size=n)
    callback = ExplainCallback("features.3", num_probe=len(NAMES), cell_size=32)
    logger = TensorBoardLogger(str(root / "tb"), name="hostile", version="v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(root, max_epochs=EPOCHS, logger=logger, callbacks=[callback], log_every_n_steps=1).fit(
            TinyCNN(num_classes=len(NAMES)), train, val
        )
    ours = [str(w.message) for w in caught if "lightning_explain" in str(w.filename)]
    assert not ours, ours  # no view failed (and was skipped) on a name
    assert callback._probe is not None and callback._probe.labels is not None
    probe_labels = callback._probe.labels.tolist()
    assert sorted(probe_labels) == list(range(len(NAMES)))  # every name is some probe image's true label
    report = root / "report.html"
    write_report(root / "tb", report, quiet=True)
    return {"tb": root / "tb", "log_dir": Path(logger.log_dir), "labels": probe_labels, "report": report}


@pytest.fixture(scope="module")
def page(chromium: str) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30000)
        dialogs: list[str] = []
        errors: list[str] = []

        def dismiss(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismiss)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.dialogs, page.errors = dialogs, errors
        yield page
        browser.close()


def _assert_names_shown_as_text(root: Any, page: Any, labels: list[int]) -> None:
    """The strip's row captions (and the large view's) spell each probe image's true class name, character for
    character; nothing was injected and no dialog opened."""
    strip = root.locator(f'.lx-strip[data-run="{RUN}"]')
    strip.locator(".lx-caption").first.wait_for()  # the page parsed its data and drew the strip
    captions = strip.locator(".lx-caption").all_text_contents()
    assert len(captions) == len(labels)
    for row, (caption, label) in enumerate(zip(captions, labels, strict=True)):
        assert caption.startswith(f"#{row} true {NAMES[label]} · predicted "), (row, caption)
    assert root.locator(":root").evaluate(INJECTED_JS) == [0, 0]
    # The large view shows the same caption as text.
    # Row 0's map at the first epoch: a cell of its own, or the top-left corner of the epoch's stacked tile.
    strip.locator('img.lx-cell[data-row="0"]:not(.lx-in), img.lx-tile[data-epoch]').first.click(
        position={"x": 2, "y": 2}
    )
    big = root.locator(".lx-big-caption").text_content()
    assert big.startswith(f"true {NAMES[labels[0]]} · predicted "), big
    page.keyboard.press("Escape")
    assert page.dialogs == [], page.dialogs
    assert page.errors == [], page.errors


def test_hostile_class_names_are_logged_in_every_grid(hostile_run):
    images = read_event_images(hostile_run["log_dir"])
    assert set(images) == {"explain/gradcam", "explain/saliency", "explain/activations"}
    for tag, events in images.items():
        assert len(events) == EPOCHS, tag  # a line break in a name made the view fail at epoch 0


def test_the_report_shows_hostile_class_names_as_text(hostile_run, page):
    page.goto(hostile_run["report"].as_uri())
    _assert_names_shown_as_text(page, page, hostile_run["labels"])
    # The page still has exactly its own two scripts: the inlined data and the front-end.
    assert page.evaluate("() => Array.from(document.scripts).map(s => s.type)") == ["application/json", "module"]


@pytest.fixture(scope="module")
def server(hostile_run: dict[str, Any]) -> Any:
    tensorboard = Server(hostile_run["tb"])
    yield tensorboard
    tensorboard.close()


def test_the_explain_tab_shows_hostile_class_names_as_text(hostile_run, page, server):
    page.goto(f"{server.url}/#lightning_explain")
    frame = page.frame_locator("iframe")
    frame.locator("select.lx-run").select_option(RUN)
    _assert_names_shown_as_text(frame, page, hostile_run["labels"])


def test_tensorboards_text_tab_shows_the_layout_with_hostile_names_inert(page, server):
    """The layouts (with the captions' class names) are also TensorBoard text summaries; TensorBoard's own Text tab
    renders Markdown, and the layout is logged as a Markdown code block, so every name shows as text there too: no
    element made from a name, no script, no dialog."""
    page.goto("about:blank")
    page.goto(f"{server.url}/#text")
    # The layout's text is on screen as code, the names in it as text (the <img> one too, not an image).
    page.get_by_text("alert('lx-xss-2')", exact=False).first.wait_for()
    page.get_by_text(NAMES[0], exact=False).first.wait_for()
    assert page.locator("pre code", has_text=NAMES[0]).count() >= 1
    assert page.locator("img[src=x], img[src$='/x']").count() == 0
    assert page.locator("[onerror]").count() == 0  # playwright's CSS engine also looks inside shadow roots
    assert page.locator("script", has_text="lx-xss").count() == 0
    assert page.dialogs == [], page.dialogs
