"""Catch a shortcut-learning CNN from the numbers: two runs on ShortcutShapes, one alert.

The label of each image is the shape it shows; a coloured patch in the top-left corner (the cue) shows a
class colour. Two small CNNs are trained:

- "shortcut": the cue always agrees with the label, so the corner alone solves the task;
- "clean": the cue shows a random class (uninformative), so only the shape helps.

ExplainCallback logs Grad-CAM and its focus on the object (lift of the energy inside the object mask over
the object's area) and drift, and at the first and last epoch whether Grad-CAM is faithful (deletion/insertion
AUC, ROAD); FocusAlert fires when the focus stays below a threshold. The behavioural truth,
accuracy on images whose cue conflicts with the label, is logged beside it.

Each run of the demo writes into a new folder ``OUT/version_N`` (N one more than the highest there, as
Lightning's ``TensorBoardLogger`` numbers its versions), so a second run never adds its steps to the first
one's event files: ``OUT/version_N/shortcut/seed<seed>`` and ``OUT/version_N/clean/seed<seed>``. The script
writes ``OUT/version_N/summary.json``, copies it to ``OUT/summary.json`` (the latest run), prints it as a table
and prints the folder.

Run (well under 3 minutes on 2 CPU cores), from the console entry point or the example script:

    lightning-explain demo --out runs/shortcut_demo
    python examples/shortcut_detection.py --out runs/shortcut_demo
    tensorboard --logdir runs/shortcut_demo --samples_per_plugin images=1000
    lightning-explain report runs/shortcut_demo/version_0 -o report.html
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_explain import ExplainCallback, FocusAlert, TCAVCallback
from lightning_explain._lightning import NAMESPACES, Callback
from lightning_explain.data import ShortcutShapes, ShortcutShapesDataModule, cue_concept_images
from lightning_explain.data.shortcut_shapes import CLASS_NAMES

if TYPE_CHECKING:
    import pytorch_lightning as pl
else:  # the unified ``lightning`` package when it is installed, else ``pytorch_lightning``
    pl = NAMESPACES[-1]


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
        out: Tensor = self.head(self.features(x))
        return out

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

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
        # Cosine decay over the run: the last epochs settle instead of oscillating.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class ConflictAccuracy(Callback):
    """Behavioural truth: accuracy on images whose corner cue shows a different class than the shape."""

    def __init__(self, conflict: ShortcutShapes) -> None:
        samples = [conflict[i] for i in range(len(conflict))]
        self.images = torch.stack([s[0] for s in samples])
        self.labels = torch.tensor([s[1] for s in samples])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        with torch.no_grad():  # validation already runs in eval mode
            preds = pl_module(self.images.to(pl_module.device)).argmax(1).cpu()
        pl_module.log("conflict_acc", (preds == self.labels).float().mean())


class Recorder(Callback):
    """Collects the numbers of each validation epoch for summary.json."""

    def __init__(self, focus_key: str, drift_key: str, cue_tcav_keys: list[str]) -> None:
        self.focus_key, self.drift_key, self.cue_tcav_keys = focus_key, drift_key, cue_tcav_keys
        self.epochs: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics

        def get(key: str) -> float | None:
            value = m.get(key)
            return None if value is None or math.isnan(float(value)) else round(float(value), 4)

        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "val_acc": get("val_acc"),
                "conflict_acc": get("conflict_acc"),
                "focus": get(self.focus_key),
                "drift": get(self.drift_key),
                "energy_in_cue": get("explain/gradcam/focus/energy_in_cue"),
                **{name: self._faithful(trainer, name) for name in ("deletion_auc", "insertion_auc", "road_gap")},
                "cue_tcav": self._cue_tcav(trainer),
            }
        )

    @staticmethod
    def _faithful(trainer: pl.Trainer, name: str) -> float | None:
        """Grad-CAM's median ``name`` over the probe, on epochs where the faithfulness numbers were computed."""
        explain = next(cb for cb in trainer.callbacks if isinstance(cb, ExplainCallback))  # type: ignore[attr-defined]
        values = explain.latest_per_image.get(f"explain/gradcam/faithfulness/{name}")
        return None if values is None else round(float(values.nanmedian()), 4)

    def _cue_tcav(self, trainer: pl.Trainer) -> float | None:
        """Mean TCAV score of each class's cue concept for that class, on epochs where TCAV ran."""
        tcav = next((cb for cb in trainer.callbacks if isinstance(cb, TCAVCallback)), None)  # type: ignore[attr-defined]
        if tcav is None or tcav.latest_epoch != trainer.current_epoch:
            return None
        values = [trainer.callback_metrics.get(key) for key in self.cue_tcav_keys]
        scores = [float(v) for v in values if v is not None]
        return round(sum(scores) / len(scores), 4) if scores and len(scores) == len(values) else None


#: The alert: Grad-CAM energy on the object no better than a uniform map (lift below the threshold).
FOCUS_KEY = "explain/gradcam/focus/lift"
DRIFT_KEY = "explain/gradcam/drift/emd_prev"
FOCUS_THRESHOLD = 0.15
FOCUS_PATIENCE = 2


def train(
    out: Path,
    name: str,
    *,
    cue_agreement: float,
    seed: int,
    epochs: int,
    train_size: int,
    image_size: int,
    cue_size: int,
    noise: float,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train one SmallCNN with ExplainCallback and FocusAlert; logs go to ``out/name/seed<seed>``."""
    pl.seed_everything(seed, verbose=False)
    data = ShortcutShapesDataModule(
        train_size=train_size,
        val_size=128,
        batch_size=32,
        image_size=image_size,
        cue_agreement=cue_agreement,
        seed=seed,
        cue_size=cue_size,
        noise=noise,
    )
    # Images whose cue always shows another class than the shape: a model that reads the cue fails them.
    conflict = ShortcutShapes(
        96, image_size=image_size, cue_agreement=0.0, seed=10_000 + seed, cue_size=cue_size, noise=noise
    )
    explain = ExplainCallback(
        layer="features.9",
        num_probe=8,
        class_names=list(CLASS_NAMES[:3]),
        object_mask_key=2,  # ShortcutShapes batches are (image, label, object_mask, cue_mask)
        cue_mask_key=3,
        # Are the maps what the model uses? Deletion/insertion AUC and ROAD of Grad-CAM, at the first and last epoch.
        faithfulness={"every_n_epochs": max(1, epochs - 1), "max_images": 8, "methods": ["gradcam"]},
    )
    alert = FocusAlert(FOCUS_KEY, threshold=FOCUS_THRESHOLD, patience=FOCUS_PATIENCE)
    # TCAV: is each class's logit sensitive to that class's corner cue? Concepts: the cue painted on cue-free
    # images; random examples: cue-free images. At the first and the last epoch.
    names = list(CLASS_NAMES[:3])
    shape_kw: dict[str, Any] = {"image_size": image_size, "cue_size": cue_size, "noise": noise}
    tcav = TCAVCallback(
        "features.9",
        concepts={f"cue_{names[k]}": cue_concept_images(k, 32, seed=20_000 + k, **shape_kw) for k in range(3)},
        random_examples=ShortcutShapes(6 * 32, cue_agreement=None, seed=30_000 + seed, **shape_kw),
        every_n_epochs=max(1, epochs - 1),
        num_random=5,
        num_class_examples=48,
        class_names=names,
    )
    recorder = Recorder(FOCUS_KEY, DRIFT_KEY, [f"explain/tcav/cue_{n}/{n}/score" for n in names])
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=pl.loggers.TensorBoardLogger(str(out), name=name, version=f"seed{seed}"),
        callbacks=[explain, tcav, ConflictAccuracy(conflict), alert, recorder],
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        log_every_n_steps=5,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FocusAlert at epoch")  # reported in the table instead
        trainer.fit(SmallCNN(), datamodule=data)
    return {
        "alert_epoch": alert.fired_epoch,
        "log_dir": trainer.logger.log_dir if trainer.logger is not None else str(out),
        "epochs": recorder.epochs,
    }


def new_version_dir(out: Path) -> Path:
    """Create and return ``out/version_N``, N one more than the highest existing version (0 for the first).

    The folder is claimed with an exclusive ``mkdir``, so two demos started at once get different folders.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     [new_version_dir(Path(tmp)).name for _ in range(2)]
        ['version_0', 'version_1']
    """
    out.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in out.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        folder = out / f"version_{version}"
        try:
            folder.mkdir()
        except FileExistsError:
            version += 1
            continue
        return folder


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'run':<10}{'epoch':>6}{'val_acc':>9}{'conflict':>10}{'focus':>8}{'cue':>7}{'drift':>8}{'cue TCAV':>10}"
        f"{'del':>6}{'ins':>6}{'ROAD':>6}"
    )
    print(f"\n{head}  alert")
    for name, run in runs.items():
        for row in run["epochs"]:
            fired = "<- ALERT" if run["alert_epoch"] == row["epoch"] else ""

            def fmt(value: float | None) -> str:
                return "-" if value is None else f"{value:.2f}"

            print(
                f"{name:<10}{row['epoch']:>6}{fmt(row['val_acc']):>9}{fmt(row['conflict_acc']):>10}"
                f"{fmt(row['focus']):>8}{fmt(row['energy_in_cue']):>7}{fmt(row['drift']):>8}"
                f"{fmt(row.get('cue_tcav')):>10}{fmt(row.get('deletion_auc')):>6}{fmt(row.get('insertion_auc')):>6}"
                f"{fmt(row.get('road_gap')):>6}  {fired}"
            )
        print(f"{name:<10}alert epoch: {run['alert_epoch']}")


def runnable(name: str) -> str:
    """``name``, a console script of this environment, as it runs when typed: the bare name when the shell finds
    this environment's script under it (the environment is activated), else the script's path (relative to the
    working directory when it lies under it, e.g. ``.venv/bin/tensorboard``).

    Example:
        >>> runnable("no-such-script-here")
        'no-such-script-here'
    """
    script = Path(sys.executable).parent / name
    if not script.exists():
        return name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == script.resolve():
        return name
    relative = os.path.relpath(script, Path.cwd())
    return relative if not relative.startswith("..") else str(script)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="lightning-explain demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/shortcut_demo"),
        help="log directory: each run writes into a new OUT/version_N (and copies its summary to OUT/summary.json)",
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=768)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--cue-size", type=int, default=12, help="side of the corner cue in pixels")
    parser.add_argument("--noise", type=float, default=0.15, help="background noise std")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", type=Path, default=None, help="also write the HTML report to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    settings = {"shortcut": 1.0, "clean": 1.0 / 3.0}  # P(cue shows the label's class); 1/3 = uninformative
    run_dir = new_version_dir(args.out)
    runs = {
        name: train(
            run_dir,
            name,
            cue_agreement=agreement,
            seed=args.seed,
            epochs=args.epochs,
            train_size=args.train_size,
            image_size=args.image_size,
            cue_size=args.cue_size,
            noise=args.noise,
            quiet=args.quiet,
        )
        for name, agreement in settings.items()
    }
    summary = {
        "seed": args.seed,
        "run_dir": str(run_dir),
        "alert": {"monitor": FOCUS_KEY, "threshold": FOCUS_THRESHOLD, "mode": "below", "patience": FOCUS_PATIENCE},
        "runs": runs,
    }
    text = json.dumps(summary, indent=2)
    (run_dir / "summary.json").write_text(text)
    (args.out / "summary.json").write_text(text)  # the latest run's, at a fixed place
    print_table(runs)
    print(f"\nThis run's logs: {run_dir} (each run of the demo gets a new version_N folder)")
    print(f"Summary: {run_dir / 'summary.json'} (copied to {args.out / 'summary.json'})")
    print(f"View the logs with (every run under {args.out}, this one as {run_dir.name}/...):")
    print(f"  {runnable('tensorboard')} --logdir {args.out} --samples_per_plugin images=1000")
    if args.report is not None:
        from lightning_explain.report import write_report

        print(f"HTML report: {write_report(run_dir, args.report, quiet=args.quiet)}")
    else:
        report = run_dir / "report.html"
        print(f"or this run as one HTML file:\n  {runnable('lightning-explain')} report {run_dir} -o {report}")
    return summary


if __name__ == "__main__":
    main()
