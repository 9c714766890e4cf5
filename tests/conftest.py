"""Shared fixtures: a tiny real LightningModule, real data, and a reader for real TensorBoard event files."""

from __future__ import annotations

import importlib
import io
import os
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from skip_guard import REQUIRE_ALL_ENV, require_all
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

#: ``pytester`` runs small inner test sessions (test_skips.py checks that skips fail under CI with it);
#: ``skip_guard`` fails the session when anything was skipped under ``LIGHTNING_EXPLAIN_REQUIRE_ALL=1``.
pytest_plugins = ("pytester", "skip_guard")

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


def read_event_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged in a TensorBoard log dir: tag -> [(step, value)], read from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------ skip, or fail in CI


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test (or the module, at import time) with ``reason``; fail instead under :func:`require_all`.

    Every skip of the suite goes through here, so that CI never passes with a test silently left out."""
    if require_all():
        pytest.fail(f"{reason} [{REQUIRE_ALL_ENV}=1 or CI=true: this fails instead of skipping]", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name`` for a test-only dependency; when it is missing, :func:`skip_or_fail`."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        skip_or_fail(f"test dependency {name!r} is missing ({err}); install it with pip install -e '.[dev]'")


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


def grid_cells(grid: np.ndarray, image_size: Any, cell_size: int, column: int) -> list[np.ndarray]:
    """The cells of ``column`` (0: the input) of a logged, captioned grid ``H x W x 3``, one per row."""
    from lightning_explain.output.render import grid_layout

    layout = grid_layout(grid.shape[:2], tuple(image_size)[-2:], cell_size)
    assert layout is not None, f"grid of {grid.shape[:2]} is not a grid of {tuple(image_size)[-2:]} images"
    assert column < layout.columns, f"the grid has {layout.columns} columns, not {column + 1}"
    boxes = (layout.cell_box(row, column) for row in range(layout.rows))
    return [grid[top:bottom, left:right] for top, left, bottom, right in boxes]


def rendered_cells(images: Tensor, cell_size: int) -> list[np.ndarray]:
    """``images`` ``[N, 3, H, W]`` in [0, 1] as :func:`~lightning_explain.output.render.compose_grid` draws their cells
    (``uint8`` ``h x w x 3``, one per image)."""
    from lightning_explain.output.render import compose_grid, grid_layout

    grid = compose_grid([images], cell_size=cell_size).permute(1, 2, 0).numpy()
    plain = grid_layout(grid.shape[:2], images.shape[-2:], cell_size, captioned=False)
    assert plain is not None
    boxes = (plain.cell_box(row, 0) for row in range(plain.rows))
    return [grid[top:bottom, left:right] for top, left, bottom, right in boxes]


def assert_cells_equal(actual: list[np.ndarray], expected: list[np.ndarray], tolerance: int, what: str) -> None:
    """Cell by cell, every pixel within ``tolerance`` grey levels (0: identical)."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} rows logged, {len(expected)} expected"
    for row, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"{what}, row {row}: cell {a.shape} != {e.shape}"
        worst = int(np.abs(a.astype(int) - e.astype(int)).max())
        assert worst <= tolerance, f"{what}, row {row}: a pixel differs by {worst} > {tolerance} grey levels"


def probe_rows_match(
    grid: np.ndarray, probe: Tensor, cell_size: int, rows: list[int] | None = None, display: Tensor | None = None
) -> None:
    """Assert that the input cell of each row of a logged grid (``H x W x 3``) shows that probe image (min-max
    scaled, or ``display`` when given: the images as the callback should show them)."""
    from lightning_explain.output.render import to_display

    cells = grid_cells(grid, probe.shape, cell_size, 0)
    expected = rendered_cells(to_display(probe) if display is None else display, cell_size)
    picked = rows if rows is not None else range(len(cells))
    assert_cells_equal([cells[r] for r in picked], [expected[r] for r in picked], 0, "input cell")


def assert_maps_agree(maps: Tensor, reference: Tensor, *, min_correlation: float, max_difference: float) -> None:
    """Per image: finite, Pearson correlation with the reference map >= ``min_correlation``, and no pixel farther
    than ``max_difference`` from it (maps in [0, 1]). For low-precision maps against fp32 ones."""
    assert maps.shape == reference.shape, (maps.shape, reference.shape)
    assert torch.isfinite(maps).all(), "the maps hold NaN or inf"
    for i, (a, b) in enumerate(zip(maps.flatten(1).double(), reference.flatten(1).double(), strict=True)):
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert corr >= min_correlation, f"image {i}: correlation {corr:.4f} < {min_correlation}"
        worst = float((a - b).abs().max())
        assert worst <= max_difference, f"image {i}: a pixel differs by {worst:.4f} > {max_difference}"


#: Grey levels a logged overlay pixel may differ from the re-rendered functional map: uint8 rounding, and one step
#: of the colour map's 256-entry table where the map sits on a rounding edge (float noise between two passes).
OVERLAY_TOLERANCE = 3


def assert_overlay_cells(
    grid: np.ndarray,
    display: Tensor,
    maps: Tensor,
    *,
    cell_size: int,
    alpha: float = 0.5,
    colormap: str = "jet",
    first_column: int = 1,
    what: str = "overlay",
) -> None:
    """Assert that the overlay cells of a logged grid show ``maps`` over ``display``, rendered with the package's
    public render functions (:func:`~lightning_explain.output.render.overlay`, ``compose_grid``).

    ``maps`` ``[N, H, W]`` fill column ``first_column``; ``[N, k, H, W]`` fill ``k`` columns from there.
    """
    from lightning_explain.output.render import overlay

    stacked = maps[:, None] if maps.ndim == 3 else maps
    assert torch.isfinite(stacked).all(), f"{what}: the reference maps hold NaN or inf"
    for j in range(stacked.shape[1]):
        expected = rendered_cells(overlay(display, stacked[:, j].float(), alpha, colormap), cell_size)
        actual = grid_cells(grid, display.shape, cell_size, first_column + j)
        assert_cells_equal(actual, expected, OVERLAY_TOLERANCE, f"{what}, column {first_column + j}")


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
    """Debian's ``chromium`` (installed with apt-get when missing and we are root). Under :func:`require_all` a
    missing browser or playwright fails the browser tests; elsewhere they skip with the reason."""
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
        skip_or_fail(f"browser tests need headless Chromium: {problem}")
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


def slow_tensorboard_logger(
    save_dir: str, name: str, version: Any, seconds: float, *, flush_each: bool = False, on_image: Any = None
) -> Any:
    """A ``TensorBoardLogger`` on a "slow disk": each image record takes ``seconds`` to write, so a view's background
    writer holds images at any moment. ``flush_each``: every record is flushed to disk at once; ``on_image()`` is
    called after each image record is written."""
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    def has_image(summary: Any) -> bool:
        return any(value.HasField("image") for value in summary.value)

    class SlowSummaryWriter(SummaryWriter):  # type: ignore[misc]
        def _get_file_writer(self) -> Any:
            file_writer = super()._get_file_writer()
            if not getattr(file_writer, "_slow", False):
                add_summary = file_writer.add_summary

                def slow_add_summary(summary: Any, *args: Any, **kwargs: Any) -> None:
                    if has_image(summary):
                        time.sleep(seconds)
                    add_summary(summary, *args, **kwargs)
                    if flush_each:
                        file_writer.flush()
                    if on_image is not None and has_image(summary):
                        on_image()

                file_writer.add_summary, file_writer._slow = slow_add_summary, True
            return file_writer

    class SlowTensorBoardLogger(TensorBoardLogger):  # type: ignore[misc]
        @property
        def experiment(self) -> Any:
            if self._experiment is None:
                self._fs.makedirs(self.log_dir, exist_ok=True)
                self._experiment = SlowSummaryWriter(log_dir=self.log_dir)
            return self._experiment

    return SlowTensorBoardLogger(save_dir, name=name, version=version)
