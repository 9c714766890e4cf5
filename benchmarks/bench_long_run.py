"""A long run: 1,000 validation epochs of a tiny model with the default callbacks; what grows and what does not.

One ``Trainer.fit`` of the demo's ``SmallCNN`` on :class:`~lightning_explain.data.ShortcutShapesDataModule` (16 px
images, 16 training and 16 validation images, one batch each), with ``ExplainCallback()`` at its defaults (16 probe
images, Grad-CAM, saliency and activations, focus and drift numbers, three grids of 128 px cells) and
``FocusAlert.without_masks()``, logging to a ``TensorBoardLogger``. A probe callback placed after them records, at
epochs 1, 10, 100, 250, 500, 750 and 1,000 (1-based, after a ``gc.collect()``):

- resident memory (``VmRSS``), and the growth from epoch 10 (after warm-up) to the end;
- open file descriptors (``/proc/self/fd``) and threads (``/proc/self/status`` ``Threads``, and Python's);
- the event files' size on disk, after the view's background writer and the logger have been flushed (the
  benchmark's own flush: the writer would flush by itself every two minutes), and the bytes per epoch between
  samples: constant when the files grow linearly in the number of epochs.

Goals from issue #25: RSS growth under 50 MB, file descriptors and threads constant, event bytes linear in epochs.
The script prints the table and exits with 1 when a goal is missed.

Run::

    python benchmarks/bench_long_run.py                 # 1,000 epochs (about 5 min on 2 shared CPU cores)
    python benchmarks/bench_long_run.py --epochs 100    # a quick look
    python benchmarks/bench_long_run.py --markdown      # print the table as Markdown

No timing is asserted; the seconds per epoch are printed for scale only.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from lightning_explain import ExplainCallback, FocusAlert
from lightning_explain._lightning import NAMESPACES, Callback
from lightning_explain.data import ShortcutShapesDataModule
from lightning_explain.tools.demo import SmallCNN

pl = NAMESPACES[-1]  # the namespace the demo's SmallCNN is built on (``lightning.pytorch`` when installed)
TensorBoardLogger = pl.loggers.TensorBoardLogger

RSS_GOAL_MB = 50.0


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Sampler(Callback):
    """Placed after the explaining callbacks: records the process's resources at the chosen (1-based) epochs."""

    def __init__(self, explain: ExplainCallback, log_dir: Path, at: set[int]) -> None:
        self.explain, self.log_dir, self.at = explain, log_dir, at
        self.rows: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        if epoch not in self.at:
            return
        sink = getattr(self.explain, "_sink", None)
        if sink is not None:
            sink.writer.flush()
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "flush"):
                experiment.flush()
        gc.collect()
        size = sum(p.stat().st_size for p in self.log_dir.rglob("events.out.tfevents.*"))
        self.rows.append(
            {
                "epoch": epoch,
                "rss_mb": _status("VmRSS") / 1024,
                "fds": _fds(),
                "threads": _status("Threads"),
                "py_threads": threading.active_count(),
                "event_bytes": size,
                "seconds": time.perf_counter() - self.start,
            }
        )
        row = self.rows[-1]
        print(
            f"epoch {epoch:5d}: RSS {row['rss_mb']:7.1f} MB, {row['fds']} fds, {row['threads']} threads "
            f"({row['py_threads']} Python), events {size / 2**20:8.2f} MiB, {row['seconds']:6.0f} s",
            flush=True,
        )


def run(epochs: int, out: Path, threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    pl.seed_everything(0, verbose=False)
    data = ShortcutShapesDataModule(train_size=16, val_size=16, batch_size=16, image_size=16, seed=0)
    logger = TensorBoardLogger(str(out), name="long_run", version=0)
    explain = ExplainCallback()
    alert = FocusAlert.without_masks()
    at = {e for e in (1, 10, 100, 250, 500, 750, 1000) if e <= epochs} | {epochs}
    sampler = Sampler(explain, Path(logger.log_dir), at)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=str(out),
        logger=logger,
        callbacks=[explain, alert, sampler],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(SmallCNN(), datamodule=data)
    return sampler.rows


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """The goals that were missed (empty: all met)."""
    missed = []
    base = next((r for r in rows if r["epoch"] >= 10), rows[0])
    growth = rows[-1]["rss_mb"] - base["rss_mb"]
    if growth >= RSS_GOAL_MB:
        missed.append(f"RSS grew by {growth:.1f} MB from epoch {base['epoch']} (goal < {RSS_GOAL_MB:.0f} MB)")
    later = [r for r in rows if r["epoch"] >= base["epoch"]]
    for key in ("fds", "threads"):
        values = {r[key] for r in later}
        if len(values) > 1:
            missed.append(f"{key} changed after epoch {base['epoch']}: {sorted(values)}")
    rates = per_epoch(rows)[1:]
    if len(rates) >= 2 and max(rates) > 1.1 * min(rates):
        missed.append(f"event bytes per epoch not constant: {[round(r) for r in rates]}")
    return missed


def per_epoch(rows: list[dict[str, Any]]) -> list[float]:
    """Event-file bytes per epoch between consecutive samples (the first: since the start)."""
    out, previous = [], {"epoch": 0, "event_bytes": 0}
    for row in rows:
        out.append((row["event_bytes"] - previous["event_bytes"]) / (row["epoch"] - previous["epoch"]))
        previous = row
    return out


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    rates = per_epoch(rows)
    head = ["epoch", "RSS (MB)", "open fds", "threads (Python)", "event files (MiB)", "bytes/epoch since last", "s"]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---:" for _ in head) + "|")
    else:
        lines.append("  ".join(head))
    for row, rate in zip(rows, rates, strict=True):
        cells = [
            str(row["epoch"]),
            f"{row['rss_mb']:.1f}",
            str(row["fds"]),
            f"{row['threads']} ({row['py_threads']})",
            f"{row['event_bytes'] / 2**20:.2f}",
            f"{rate:,.0f}",
            f"{row['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="log directory (default: a temporary one)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.epochs, args.out or Path(tmp), args.threads)
    print()
    print(table(rows, args.markdown))
    base = next((r for r in rows if r["epoch"] >= 10), rows[0])
    print(
        f"\nRSS growth from epoch {base['epoch']} to {rows[-1]['epoch']}: {rows[-1]['rss_mb'] - base['rss_mb']:.1f} MB "
        f"(from epoch 1: {rows[-1]['rss_mb'] - rows[0]['rss_mb']:.1f} MB); "
        f"event files {rows[-1]['event_bytes'] / rows[-1]['epoch']:,.0f} bytes per epoch on average"
    )
    missed = verdict(rows)
    for line in missed:
        print("MISSED:", line)
    if not missed:
        print("All goals met: RSS growth < 50 MB, fds and threads constant, event files linear in epochs.")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
