"""The disk fills up or the log dir becomes unwritable mid-run: one warning, training goes on, writing resumes.

The fault is injected where TensorBoard's event file meets the disk (``LocalFileSystem._write``, which every record
of a ``GFile`` goes through): the sandbox and CI may run as root, so a ``chmod`` would not make writes fail. A full
disk writes part of the record first, as a real ``ENOSPC`` in the middle of a write does.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import TinyCNN, loaders, read_event_images, read_event_scalars, trainer
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.compat.tensorflow_stub.io.gfile import LocalFileSystem
from torch.utils.tensorboard import SummaryWriter

from lightning_explain import ExplainCallback
from lightning_explain.output.disk import EventFileGuard, guard_event_file
from lightning_explain.output.sinks import ImageSink


class Disk:
    """A fault switch for event files: while ``refuse`` is an errno, writes to ``*tfevents*`` files raise it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refuse: int | None = None
        self.refused = 0
        original = LocalFileSystem._write

        def write(fs: Any, filename: str, file_content: Any, mode: str) -> None:
            if self.refuse is None or "tfevents" not in str(filename):
                return original(fs, filename, file_content, mode)
            self.refused += 1
            if self.refuse == errno.ENOSPC:  # a full disk takes part of the record before it refuses the rest
                original(fs, filename, bytes(file_content)[: len(file_content) // 2], mode)
            raise OSError(self.refuse, os.strerror(self.refuse), filename)

        monkeypatch.setattr(LocalFileSystem, "_write", write)


class _FullDuring(Callback):
    """The disk is full at the validation of ``epochs``; it is freed at the next training epoch's start, once every
    image of the epoch before has met the full disk (the view's sink flushed)."""

    def __init__(self, disk: Disk, epochs: set[int], view: ExplainCallback) -> None:
        self.disk, self.epochs, self.view = disk, epochs, view

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch in self.epochs and not trainer.sanity_checking:
            self.disk.refuse = errno.ENOSPC

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.view._sink.flush()
        self.disk.refuse = None


def test_full_disk_mid_run_warns_once_training_and_checkpoints_go_on_and_images_resume(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    train, val = loaders(n=24, size=16)  # 3 batches an epoch: epoch e's images at step 3e + 2
    view = ExplainCallback("features.3", num_probe=2, cell_size=16)
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="run", version="v0")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    fit = trainer(
        tmp_path,
        max_epochs=5,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=True,
        callbacks=[view, _FullDuring(disk, {1, 2}, view), checkpoints],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(TinyCNN(), train, val)

    assert fit.state.finished and fit.global_step == 15, "training stopped"
    assert disk.refused > 0, "the fault was never hit"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        f"epoch={e}-step={3 * (e + 1)}.ckpt" for e in range(5)
    ], "Lightning's checkpoints are missing"
    disk_warnings = [str(w.message) for w in caught if "could not be written" in str(w.message)]
    assert len(disk_warnings) == 1, disk_warnings
    assert "[ENOSPC]" in disk_warnings[0] and "tfevents" in disk_warnings[0] and "resumes" in disk_warnings[0]
    assert not [w for w in caught if "failed at epoch" in str(w.message)], "a view was switched off"

    images = read_event_images(logger.log_dir)  # every event file of the run, the torn one included
    assert [step for step, _ in images["explain/gradcam"]] == [2, 11, 14], "epochs 0, 3 and 4 should have images"
    files = sorted(p.name for p in Path(logger.log_dir).glob("*tfevents*"))
    assert len(files) == 2 and files[1] == files[0] + ".0001", files  # the broken file, then the one resumed
    epochs = dict(read_event_scalars(logger.log_dir)["epoch"])
    assert epochs[14] == 4.0, "Lightning's scalars were not written after the disk came back"


class _FullWhileTraining(Callback):
    """The disk is full from the first training step of epoch 0 (before the view logged anything) to epoch 1."""

    def __init__(self, disk: Disk, view: ExplainCallback) -> None:
        self.disk, self.view = disk, view

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.view._sink.flush()
        self.disk.refuse = errno.ENOSPC if trainer.current_epoch == 0 else None


def test_a_disk_full_before_the_views_first_image_does_not_stop_training(tmp_path, monkeypatch):
    # Lightning's own scalars meet the full disk first: the guard is in place from the view's setup, not from its
    # first image (TensorBoard's writer thread would die on them and the next log_metrics raise).
    disk = Disk(monkeypatch)
    train, val = loaders(n=24, size=16)
    view = ExplainCallback("features.3", num_probe=2, cell_size=16)
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="run", version="v0")
    fit = trainer(
        tmp_path, max_epochs=3, logger=logger, log_every_n_steps=1, callbacks=[view, _FullWhileTraining(disk, view)]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(TinyCNN(), train, val)
    assert fit.state.finished and fit.global_step == 9, "training stopped"
    assert disk.refused > 0, "the fault was never hit"
    assert len([w for w in caught if "could not be written" in str(w.message)]) == 1
    images = read_event_images(logger.log_dir)
    assert [step for step, _ in images["explain/gradcam"]] == [5, 8], "epochs 1 and 2 should have images"


def test_unwritable_folder_drops_records_keeps_the_writer_alive_and_resumes(tmp_path, monkeypatch):
    """EACCES at the event file: TensorBoard's writer thread would die and every later add_scalar raise; guarded, the
    records of the outage are dropped, add_scalar keeps working, and a retry starts a new file."""
    disk = Disk(monkeypatch)
    writer = SummaryWriter(str(tmp_path))
    guard = guard_event_file(writer)
    assert isinstance(guard, EventFileGuard) and guard_event_file(writer) is guard  # installed once
    writer.add_scalar("loss", 1.0, 0)
    writer.flush()
    disk.refuse = errno.EACCES
    writer.add_scalar("loss", 2.0, 1)
    writer.flush()  # unguarded, this raises PermissionError from TensorBoard's dead writer thread
    assert guard.error is not None and guard.error.errno == errno.EACCES
    assert not guard.retry(), "the folder is still unwritable"
    assert [p.name for p in tmp_path.glob("*tfevents*.0001")] == [], "a failed retry left a file behind"
    writer.add_scalar("loss", 3.0, 2)
    writer.flush()
    disk.refuse = None
    assert guard.retry() and guard.error is None
    writer.add_scalar("loss", 4.0, 3)
    writer.close()
    err = guard.take_report()
    assert err is not None and err.errno == errno.EACCES and guard.take_report() is None  # reported once
    assert read_event_scalars(tmp_path)["loss"] == [(0, 1.0), (3, 4.0)]
    assert guard.dropped == 2


def test_png_files_on_a_full_disk_are_skipped_with_one_warning_and_resume(tmp_path, monkeypatch):
    """Without TensorBoard the grids are PNG files: a full disk skips them (one warning), later epochs write again."""
    import torch

    folder = tmp_path / "png"
    real_write = Path.write_bytes
    full = {"on": True}

    def write_bytes(path: Path, data: bytes) -> int:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    sink = ImageSink()
    sink.open()
    image = {"explain/gradcam": torch.zeros(3, 4, 4, dtype=torch.uint8)}
    logger = CSVLogger(str(folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink.write([logger], image, step=1, epoch=0, default_root_dir=str(tmp_path))
        sink.flush()
        full["on"] = False
        paths = sink.write([logger], image, step=2, epoch=1, default_root_dir=str(tmp_path))
        sink.close()
    messages = [str(w.message) for w in caught if "could not be written" in str(w.message)]
    assert len(messages) == 1 and "[ENOSPC]" in messages[0] and "PNG files" in messages[0]
    assert [p.exists() for p in paths] == [True]
    assert len(list(Path(logger.log_dir).rglob("*.png"))) == 1
