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
