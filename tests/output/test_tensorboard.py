"""A real TensorBoard server over a real run: the images (every epoch), the scalars, and the dashboard in Chromium.

The server is started as the docs say (``--samples_per_plugin images=1000``) on 127.0.0.1 and a free port,
and read over HTTP like the browser does. The shared run has 11 epochs: with TensorBoard's default of 10 images
per tag one epoch would be missing. ``images=0`` (often advised) serves no image at all with TensorBoard 2.21:
the images plugin passes the 0 on as its downsampling target (tested below).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RUN_EPOCHS, read_event_images
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def _json(url: str) -> Any:
    return json.loads(_get(url))


@contextlib.contextmanager
def serve(logdir: Path, samples: str, log_path: Path) -> Iterator[str]:
    """Run ``tensorboard --logdir LOGDIR --samples_per_plugin SAMPLES`` on 127.0.0.1; yield its base URL."""
    port = _free_port()
    log = log_path.open("w")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--samples_per_plugin", samples]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # bounded wait: until the server answers with the run's image tags
            if server.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {server.returncode}; see {log.name}")
            try:
                if _json(f"{base}/data/plugin/images/tags"):
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard did not serve {logdir} within 90 s; see {log.name}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def tensorboard(explained_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a TensorBoard serving the shared run, stopped after the module."""
    log = tmp_path_factory.mktemp("tensorboard") / "server.log"
    with serve(explained_run["root"], "images=1000", log) as base:
        yield base


def test_tensorboard_serves_every_epochs_grid(explained_run, tensorboard):
    logged = read_event_images(explained_run["log_dir"])
    tags = _json(f"{tensorboard}/data/plugin/images/tags")
    assert list(tags) == ["tiny/v0"]
    assert set(tags["tiny/v0"]) == {"explain/gradcam", "explain/saliency", "explain/activations"}
    for tag, expected in logged.items():
        query = urllib.parse.urlencode({"run": "tiny/v0", "tag": tag, "sample": 0})
        entries = _json(f"{tensorboard}/data/plugin/images/images?{query}")
        assert [e["step"] for e in entries] == [step for step, _ in expected]
        assert len(entries) == RUN_EPOCHS  # more than the default 10
        for entry, (_, pixels) in zip(entries, expected, strict=True):
            png = _get(f"{tensorboard}/data/plugin/images/individualImage?{entry['query']}")
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), pixels)


def test_tensorboard_serves_the_scalars_and_the_layout(explained_run, tensorboard):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(explained_run["log_dir"]), size_guidance={"scalars": 0})
    acc.Reload()
    tags = _json(f"{tensorboard}/data/plugin/scalars/tags")["tiny/v0"]
    for tag in (
        "explain/gradcam/drift/emd_prev",
        "explain/gradcam/focus/border_lift",
        "explain/saliency/drift/emd_prev",
    ):
        assert tag in tags
        query = urllib.parse.urlencode({"run": "tiny/v0", "tag": tag})
        served = _json(f"{tensorboard}/data/plugin/scalars/scalars?{query}")
        expected = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [(s, pytest.approx(v)) for _, s, v in served] == expected
    assert len(expected) == RUN_EPOCHS - 1  # emd_prev: from the second epoch on
    text_tags = _json(f"{tensorboard}/data/plugin/text/tags")["tiny/v0"]
    assert any(t.startswith("explain/layout") for t in text_tags)


def _blob_tag(src: str | None, tag: str = "explain/gradcam") -> bool:
    """Whether an ``individualImage?blob_key=...`` URL is an image of ``tag`` (the key is base64 JSON)."""
    key = urllib.parse.parse_qs(urllib.parse.urlsplit(src or "").query).get("blob_key", [""])[0]
    decoded = json.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)) or b"[]")
    return tag in decoded


def test_tensorboard_images_dashboard_shows_the_grid(explained_run, tensorboard, browser, tmp_path):
    logged = read_event_images(explained_run["log_dir"])
    page = browser.new_page()
    page.goto(f"{tensorboard}/?darkMode=false#images")
    images = page.locator("img[src*='individualImage']")
    deadline = time.monotonic() + 60
    while images.count() < 3 and time.monotonic() < deadline:  # bounded: the dashboard loads lazily
        page.wait_for_timeout(500)
    assert images.count() >= 3, "the images dashboard showed no grids"
    gradcam = next(images.nth(i) for i in range(images.count()) if _blob_tag(images.nth(i).get_attribute("src")))
    gradcam.scroll_into_view_if_needed()
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=gradcam.element_handle(), timeout=30_000)
    natural = gradcam.evaluate("(el) => [el.naturalHeight, el.naturalWidth]")
    last = logged["explain/gradcam"][-1][1]
    assert tuple(natural) == last.shape[:2]
    page.screenshot(path=str(tmp_path / "tensorboard_images.png"))  # the dashboard, as a person sees it
    # The grid as shown: a screenshot of the <img> element, compared with the logged grid scaled to its size
    # (TensorBoard enlarges small images with nearest neighbours).
    shot = tmp_path / "gradcam_card.png"
    gradcam.screenshot(path=str(shot))
    shown = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    size = (shown.shape[1], shown.shape[0])
    expected = np.asarray(Image.fromarray(last).resize(size, Image.NEAREST)).astype(float)
    assert shown.shape[0] >= last.shape[0] and np.abs(shown - expected).mean() < 8, "the card does not show the grid"
    colours = {tuple(c) for c in last.reshape(-1, 3)[::7]}
    seen = {tuple(c) for c in shown.astype(np.uint8).reshape(-1, 3)}
    assert len(colours & seen) / len(colours) > 0.5  # the grid's own colours are on screen


def test_samples_per_plugin_images_0_serves_no_images(explained_run, tmp_path):
    """Why the docs say ``images=1000``: with the pinned TensorBoard, ``images=0`` hides every image."""
    with serve(explained_run["root"], "images=0", tmp_path / "server.log") as base:
        assert "explain/gradcam" in _json(f"{base}/data/plugin/images/tags")["tiny/v0"]
        query = urllib.parse.urlencode({"run": "tiny/v0", "tag": "explain/gradcam"})
        assert _json(f"{base}/data/plugin/images/images?{query}") == []
