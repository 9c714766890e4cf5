"""Shared parts of the dashboard tests: one real training run per test process, TensorBoard servers, readers.

Not a ``conftest.py`` on purpose: the suite's modules import helpers with ``from conftest import ...``, and a second
``conftest.py`` module would shadow the root one.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: The shared run: 3 epochs, 4 probe images of 16 px in 32 px cells, Grad-CAM, saliency and activations.
EPOCHS = 3
PROBE = 4
CELL = 32
#: The alert fires at the second explained epoch (border lift above -1 is always "bad"; patience 2).
ALERT_EPOCH = 1


@functools.cache
def trained_logdir() -> Path:
    """A log dir with two runs written by a real ``Trainer`` with ``ExplainCallback`` and ``FocusAlert``:
    ``tiny/a`` (seed 0) and ``tiny/b`` (seed 1, two epochs only, to test the alignment by epoch)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    from conftest import TinyCNN, loaders, trainer
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_explain import ExplainCallback, FocusAlert

    root = Path(tempfile.mkdtemp(prefix="dash-logdir-"))
    atexit.register(shutil.rmtree, root, True)
    for version, seed, epochs in (("a", 0, EPOCHS), ("b", 1, EPOCHS - 1)):
        torch.manual_seed(seed)
        train, val = loaders(n=16, size=16)
        explain = ExplainCallback("features.3", num_probe=PROBE, cell_size=CELL)
        alert = FocusAlert("explain/gradcam/focus/border_lift", threshold=-1.0, mode="above", patience=ALERT_EPOCH + 1)
        logger = TensorBoardLogger(str(root), name="tiny", version=version)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="FocusAlert at epoch")  # it fires on purpose
            fit = trainer(
                root / "work", max_epochs=epochs, logger=logger, callbacks=[explain, alert], log_every_n_steps=1
            )
            fit.fit(TinyCNN(), train, val)
    shutil.rmtree(root / "work", ignore_errors=True)
    return root


def records(path: Path) -> list[tuple[int, int, Any]]:
    """``(start, end, Event)`` of each record of an event file."""
    from tensorboard.compat.proto.event_pb2 import Event

    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length + 4
        out.append((pos, end, Event.FromString(data[pos + 12 : pos + 12 + length])))
        pos = end
    return out


def event_file(run: Path) -> Path:
    files = sorted(run.glob("*tfevents*"))
    assert len(files) == 1, files
    return files[0]


def logged_grids(run: Path, tag: str) -> dict[int, np.ndarray]:
    """``{step: H x W x 3}`` of every grid logged under ``tag`` in a run folder."""
    out = {}
    for _, _, event in records(event_file(run)):
        for value in event.summary.value:
            if value.tag == tag and value.WhichOneof("value") == "image":
                out[event.step] = png_pixels(value.image.encoded_image_string)
    return out


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def enlarged(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A served cell (stored at its image's own size) as the browser shows it in a cell of ``shape``: each pixel
    repeated in a whole-factor block (``image-rendering: pixelated``)."""
    fh, fw = shape[0] // pixels.shape[0], shape[1] // pixels.shape[1]
    assert (pixels.shape[0] * fh, pixels.shape[1] * fw) == tuple(shape[:2]), (pixels.shape, shape)
    return np.repeat(np.repeat(pixels, fh, axis=0), fw, axis=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``tensorboard --logdir LOGDIR`` in a subprocess on a free loopback port (plugins from the entry points)."""

    def __init__(self, logdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = "import sys; from tensorboard.main import run_main; sys.argv[0] = 'tensorboard'; run_main()"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--reload_interval",
                "1",
                "--load_fast",
                "false",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/data/plugins_listing")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                    raise RuntimeError(f"TensorBoard did not start: {out[-2000:]}") from None
                time.sleep(0.2)

    def get(self, path: str) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of ``GET path``."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Content-Type", "")

    def json(self, path: str) -> Any:
        status, body, _ = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def close(self) -> None:
        self.proc.kill()  # our own child; nothing of it needs a clean shutdown
        self.proc.wait(10)


def live_copy(root: Path) -> tuple[Path, bytes, int]:
    """``root/live/a``: run tiny/a cut just before its last epoch's grids; returns (file, all bytes, cut), so that
    a test can append ``data[cut:]`` as training would."""
    source = event_file(trained_logdir() / "tiny" / "a")
    spans = records(source)
    steps = [e.step for _, _, e in spans if any(v.WhichOneof("value") == "image" for v in e.summary.value)]
    cut = min(
        start
        for start, _, e in spans
        if e.step == max(steps)
        and any(v.WhichOneof("value") == "image" or v.tag.endswith("layout/text_summary") for v in e.summary.value)
    )
    target = root / "live" / "a" / source.name
    target.parent.mkdir(parents=True)
    data = source.read_bytes()
    target.write_bytes(data[:cut])
    return target, data, cut


@functools.cache
def site() -> dict[str, Any]:
    """One TensorBoard for the test process on a log dir with ``tiny/a``, ``tiny/b`` and ``live/a`` (tiny/a less its
    last epoch, which the live test appends): ``{"server", "root", "live"}``."""
    root = Path(tempfile.mkdtemp(prefix="dash-site-"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(trained_logdir() / "tiny", root / "tiny")
    live = live_copy(root)
    server = Server(root)
    atexit.register(server.close)
    return {"server": server, "root": root, "live": live}


@functools.cache
def empty_site() -> Server:
    """One TensorBoard on a log dir whose only run holds a scalar written by torch's SummaryWriter."""
    from torch.utils.tensorboard import SummaryWriter

    root = Path(tempfile.mkdtemp(prefix="dash-empty-"))
    atexit.register(shutil.rmtree, root, True)
    with SummaryWriter(str(root / "other")) as writer:
        writer.add_scalar("loss", 1.0, 0)
    server = Server(root)
    atexit.register(server.close)
    return server
