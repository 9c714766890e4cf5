"""Shared fixtures: a tiny real LightningModule, real data, and a reader for real TensorBoard event files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class TinyCNN(pl.LightningModule):
    """A small real CNN: conv, BatchNorm, in-place ReLU, dropout. ``features.3`` is the last conv."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3, lr: float = 0.05) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, num_classes))
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def make_dataset(n: int = 24, size: int = 16, channels: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, channels, size, size, generator=g), torch.randint(0, 3, (n,), generator=g))


def loaders(n: int = 24, size: int = 16, batch_size: int = 8, shuffle: bool = False) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(make_dataset(n, size, seed=1), batch_size=batch_size, shuffle=shuffle)
    val = DataLoader(make_dataset(n, size, seed=2), batch_size=batch_size)
    return train, val


def trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = {
        "max_epochs": 2,
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "devices": 1,
    }
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def read_event_images(log_dir: str | Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Every image logged in a TensorBoard log dir: tag -> [(step, HxWx3 uint8)], read from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for tag in acc.Tags()["images"]:
        out[tag] = [
            (e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))) for e in acc.Images(tag)
        ]
    return out


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------ a shared real run

#: The shared run: 11 epochs, so that TensorBoard's default of 10 images per tag would drop one.
RUN_EPOCHS = 11
RUN_PROBE = 3
RUN_CELL = 32


@pytest.fixture(scope="session")
def explained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real ``Trainer`` run of TinyCNN with ``ExplainCallback`` and a ``TensorBoardLogger``, shared by the
    report, TensorBoard and browser tests: ``{"root", "log_dir", "probe", "callback"}``."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_explain import ExplainCallback

    root = tmp_path_factory.mktemp("explained_run")
    torch.manual_seed(0)
    train, val = loaders(n=16, size=16)
    callback = ExplainCallback("features.3", num_probe=RUN_PROBE, cell_size=RUN_CELL)
    logger = TensorBoardLogger(str(root / "tb"), name="tiny", version="v0")
    trainer(root, max_epochs=RUN_EPOCHS, logger=logger, callbacks=[callback], log_every_n_steps=1).fit(
        TinyCNN(), train, val
    )
    assert callback._probe is not None
    return {"root": root / "tb", "log_dir": Path(logger.log_dir), "probe": callback._probe.images, "callback": callback}


def probe_rows_match(grid: np.ndarray, probe: Tensor, cell_size: int, rows: list[int] | None = None) -> None:
    """Assert that the input cell of each row of a logged grid (``H x W x 3``) shows that probe image."""
    from lightning_explain.render import compose_grid, grid_layout, to_display

    layout = grid_layout(grid.shape[:2], probe.shape[-2:], cell_size)
    assert layout is not None, f"grid of {grid.shape[:2]} is not a grid of {tuple(probe.shape[-2:])} images"
    expected = compose_grid([to_display(probe)], cell_size=cell_size).permute(1, 2, 0).numpy()
    plain = grid_layout(expected.shape[:2], probe.shape[-2:], cell_size, captioned=False)
    assert plain is not None
    for r in rows if rows is not None else range(layout.rows):
        top, left, bottom, right = layout.cell_box(r, 0)
        etop, eleft, ebottom, eright = plain.cell_box(r, 0)
        assert np.array_equal(grid[top:bottom, left:right], expected[etop:ebottom, eleft:eright]), f"row {r}"


# ------------------------------------------------------------------------------------------ headless Chromium

#: Launch flags for Debian's chromium in a sandbox-less container, with no network traffic of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _find_chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's ``chromium`` (installed with apt-get when missing and we are root). Under ``CI=true`` a missing
    browser or playwright fails the browser tests; elsewhere they skip with the reason."""
    import os
    import shutil
    import subprocess

    path = _find_chromium()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, capture_output=True)
        path = _find_chromium()
    problem = None
    if path is None:
        problem = "Debian's chromium is not installed (apt-get install chromium, as root; make test does it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests need headless Chromium under CI: {problem}")
        pytest.skip(f"browser test skipped: {problem}")
    assert path is not None
    return path


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Any:
    """A headless Chromium context (playwright, driving the system browser: no browser download), new profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
