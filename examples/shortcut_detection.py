"""Watch a CNN learn a shortcut: train on ShortcutShapes with ExplainCallback and look at TensorBoard.

The label of each image is the shape it shows; a coloured patch in the top-left corner (the cue) shows the
class colour too. With ``--cue-agreement 1.0`` the cue always agrees with the label, so the network can solve
the task from the corner alone; Grad-CAM shows where it looks, epoch by epoch.

Run (about a minute on 2 CPU cores):

    python examples/shortcut_detection.py --out runs/demo
    tensorboard --logdir runs/demo --samples_per_plugin images=0
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_explain import ExplainCallback
from lightning_explain.data import ShortcutShapesDataModule
from lightning_explain.data.shortcut_shapes import CLASS_NAMES


class SmallCNN(pl.LightningModule):
    """Four conv blocks and a linear head; ``features.9`` (the last conv block's ReLU) is the CAM layer."""

    def __init__(self, num_classes: int = 3, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, 16),
            nn.MaxPool2d(2),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean(), prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def train(
    out: Path, name: str, *, cue_agreement: float, seed: int, epochs: int, train_size: int, image_size: int
) -> pl.Trainer:
    """Train one SmallCNN with ExplainCallback; logs go to ``out/name``."""
    pl.seed_everything(seed, verbose=False)
    data = ShortcutShapesDataModule(
        train_size=train_size,
        val_size=128,
        batch_size=32,
        image_size=image_size,
        cue_agreement=cue_agreement,
        seed=seed,
    )
    explain = ExplainCallback(
        target_layer="features.9",
        num_probe=8,
        class_names=list(CLASS_NAMES[:3]),
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(str(out), name=name, version=f"seed{seed}"),
        callbacks=[explain],
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=5,
    )
    trainer.fit(SmallCNN(), datamodule=data)
    return trainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/shortcut_demo"), help="log directory")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cue-agreement", type=float, default=1.0, help="P(cue shows the label's class)")
    parser.add_argument("--train-size", type=int, default=768)
    parser.add_argument("--image-size", type=int, default=48)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    trainer = train(
        args.out,
        "shortcut" if args.cue_agreement >= 0.99 else "run",
        cue_agreement=args.cue_agreement,
        seed=args.seed,
        epochs=args.epochs,
        train_size=args.train_size,
        image_size=args.image_size,
    )
    log_dir = trainer.logger.log_dir if trainer.logger is not None else args.out
    print(f"\nExplanations logged to {log_dir}")
    print(f"View them with:\n  tensorboard --logdir {args.out} --samples_per_plugin images=0")


if __name__ == "__main__":
    main()
