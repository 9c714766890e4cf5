"""The film strip in docs/natural_shortcut.png: Grad-CAM of the same probe images, epoch by epoch, for a small CNN
trained on NaturalShortcut with the background as a shortcut (p = 0.95) and on the clean control (p = 1/3).

Each row is one run; its columns are epochs 0..E-1 for each of the first probe images; the caption of a run gives
the in-distribution and counter-split accuracy of its last epoch and the epoch its FocusAlerts fired.

    python benchmarks/natural_shortcut_filmstrip.py            # writes docs/natural_shortcut.png (about a minute)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from bench_shortcut_detection import CLEAN_P, SHORTCUT_P, pl, run

from lightning_explain.data import NaturalShortcut
from lightning_explain.functional import explain


class FilmStrip(pl.Callback):
    """Grad-CAM of ``images`` after every validation epoch (eval mode, as the ExplainCallback sees the model)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.frames = images, []  # type: list[torch.Tensor]

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            result = explain(pl_module, self.images.to(pl_module.device), "net.0", ["gradcam"])
            self.frames.append(result["gradcam"].detach().cpu())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/natural_shortcut.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    probe = NaturalShortcut(args.images, split="val", image_size=32, seed=args.seed)
    images = torch.stack([probe[i][0] for i in range(args.images)])
    runs = []
    for p in (SHORTCUT_P, CLEAN_P):
        strip = FilmStrip(images)
        result = run("cnn", args.seed, p, epochs=args.epochs, train_size=384, extra_callbacks=[strip])
        runs.append((result, strip.frames))
    columns = args.images * args.epochs
    fig, axes = plt.subplots(2, columns, figsize=(columns * 0.8, 2 * 1.35), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.02, wspace=0.06, hspace=0.75)
    for row, (result, frames) in enumerate(runs):
        last = result["epochs"][-1]
        fired = {k: v for k, v in result["first_alert"].items() if k in ("masks", "boxes", "nothing")}
        title = (
            f"{result['kind']} (background agrees {result['p']:.0%}): ID acc {last['val_acc']:.2f}, counter acc "
            f"{last['counter_acc']:.2f}; first alert epoch: {fired}"
        )
        for i in range(args.images):
            for epoch, maps in enumerate(frames):
                ax = axes[row][i * args.epochs + epoch]
                ax.imshow(images[i].permute(1, 2, 0).numpy())
                ax.imshow(maps[i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"image {i}, epoch {epoch}", fontsize=6)
        axes[row][0].text(0, 1.32, title, transform=axes[row][0].transAxes, fontsize=8, va="bottom")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
