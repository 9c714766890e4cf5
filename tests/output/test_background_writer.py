"""Images written off the training thread are never lost; long work shows a progress bar only beside the Trainer's."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import TinyCNN, loaders, read_event_images, slow_tensorboard_logger, trainer
from pytorch_lightning.callbacks import Callback, RichProgressBar, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from rich.progress import Progress
from torch.utils.tensorboard import SummaryWriter

from lightning_explain import ExplainCallback
from lightning_explain.callbacks._progress import _RichReporter
from lightning_explain.functional import progress
from lightning_explain.output.sinks import FAST_CRC_ENV, THREAD_NAME, BackgroundWriter

SLOW_SECONDS = 0.25


class _StopAt(Callback):
    """Raises ``error`` at the start of training epoch ``epoch``, after checking that images are still in flight."""

    def __init__(self, epoch: int, error: BaseException) -> None:
        self.epoch, self.error, self.in_flight = epoch, error, -1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.in_flight = _writer(trainer).pending()
            raise self.error


def _writer(trainer) -> BackgroundWriter:
    """The background writer of the trainer's ExplainCallback (its sink's, for this run)."""
    (callback,) = [cb for cb in trainer.callbacks if isinstance(cb, ExplainCallback)]
    assert callback._sink.writer is not None
    return callback._sink.writer


def _image_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def _run(tmp_path, *extra, epochs=3, **kwargs):
    train, val = loaders()
    logger = slow_tensorboard_logger(str(tmp_path), "tb", 0, SLOW_SECONDS)
    cb = ExplainCallback(num_probe=3, cell_size=32, metrics=False)
    t = trainer(tmp_path, logger=logger, callbacks=[cb, *extra], max_epochs=epochs, **kwargs)
    return t, cb, train, val


def _steps(tmp_path) -> dict[str, list[int]]:
    return {
        tag: [step for step, _ in events] for tag, events in read_event_images(tmp_path / "tb" / "version_0").items()
    }


def test_every_image_is_on_disk_when_fit_and_validate_return(tmp_path):
    t, _cb, train, val = _run(tmp_path)
    t.fit(TinyCNN(), train, val)
    steps = _steps(tmp_path)
    assert steps["explain/gradcam"] == steps["explain/saliency"] == steps["explain/activations"] == [2, 5, 8]
    assert _writer(t).pending() == 0
    t.validate(t.lightning_module, val)
    # validate() after fit: at the step Lightning logs its val_loss at (the batches trained so far)
    assert _steps(tmp_path)["explain/gradcam"] == [2, 5, 8, 9]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_every_image_is_on_disk_when_training_stops_on_an_exception(tmp_path, error):
    stop = _StopAt(2, error)
    t, _cb, train, val = _run(tmp_path, stop, epochs=5)
    expected = SystemExit if isinstance(error, KeyboardInterrupt) else RuntimeError  # Lightning exits on Ctrl+C
    with pytest.raises(expected):
        t.fit(TinyCNN(), train, val)
    assert stop.in_flight > 0  # the images of epoch 1 were still being written when training stopped
    steps = _steps(tmp_path)
    assert steps["explain/gradcam"] == steps["explain/activations"] == [2, 5]


def test_two_trainers_one_after_the_other_each_write_their_images_and_leave_no_thread(tmp_path):
    assert not _image_threads()
    for name in ("a", "b"):
        t, _cb, train, val = _run(tmp_path / name, epochs=2)
        t.fit(TinyCNN(), train, val)
        assert not _image_threads()  # the writer's thread was joined at teardown
        assert _steps(tmp_path / name) == {f"explain/{m}": [2, 5] for m in ("gradcam", "saliency", "activations")}


class _GatedSummaryWriter(SummaryWriter):
    """TensorBoard's own writer whose image records wait for ``gate`` (at most 30 s, so a bug cannot hang the run)."""

    gate = threading.Event()

    def _get_file_writer(self):
        file_writer = super()._get_file_writer()
        if not getattr(file_writer, "_gated", False):
            add_summary = file_writer.add_summary

            def gated_add_summary(summary, *args, **kwargs):
                if any(value.HasField("image") for value in summary.value):
                    self.gate.wait(30)
                return add_summary(summary, *args, **kwargs)

            file_writer.add_summary, file_writer._gated = gated_add_summary, True
        return file_writer


class GatedTensorBoardLogger(TensorBoardLogger):
    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _GatedSummaryWriter(log_dir=self.log_dir)
        return self._experiment


class _FitAnother(Callback):
    """At the end of the first validation epoch of the outer Trainer (after its ExplainCallback queued the epoch's
    images, which wait for the gate), fits a second Trainer with its own ExplainCallback to the end."""

    def __init__(self, root: Path) -> None:
        self.root, self.seen = root, {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.seen:
            return
        outer = _writer(trainer)
        self.seen["outer_pending_before"] = outer.pending()
        inner, _cb, train, val = _run(self.root, epochs=2)
        inner.fit(TinyCNN(), train, val)
        self.seen["outer_pending_after"] = outer.pending()
        self.seen["outer_alive"] = outer.alive()
        self.seen["inner_steps"] = _steps(self.root)
        self.seen["threads"] = len(_image_threads())
        _GatedSummaryWriter.gate.set()


def test_a_trainer_fitted_inside_another_neither_waits_for_nor_writes_the_others_images(tmp_path):
    _GatedSummaryWriter.gate.clear()
    nested = _FitAnother(tmp_path / "inner")
    train, val = loaders()
    logger = GatedTensorBoardLogger(str(tmp_path / "outer"), name="tb", version=0)
    cb = ExplainCallback(num_probe=3, cell_size=32, metrics=False)
    outer = trainer(tmp_path / "outer", logger=logger, callbacks=[cb, nested], max_epochs=2)
    try:
        outer.fit(TinyCNN(), train, val)
    finally:
        _GatedSummaryWriter.gate.set()
    seen = nested.seen
    assert seen["outer_pending_before"] == 1  # the outer epoch-0 images wait for the gate
    assert seen["outer_pending_after"] == 1  # the inner Trainer's teardown did not wait for them (or write them)
    assert seen["outer_alive"] and seen["threads"] == 1  # the outer writer still runs; the inner one is joined
    views = {f"explain/{m}" for m in ("gradcam", "saliency", "activations")}
    assert seen["inner_steps"] == {tag: [2, 5] for tag in views}  # the inner run's images, complete at its end
    assert _steps(tmp_path / "outer") == {tag: [2, 5] for tag in views}
    assert not _image_threads()


def test_png_files_are_written_in_the_background_and_flushed(tmp_path):
    train, val = loaders()
    cb = ExplainCallback(methods=("gradcam",), num_probe=2, cell_size=32, metrics=False)
    t = trainer(tmp_path, logger=CSVLogger(str(tmp_path), name="csv", version=0), callbacks=[cb], max_epochs=2)
    with pytest.warns(UserWarning, match="PNG files"):
        t.fit(TinyCNN(), train, val)
    files = sorted(
        p.name for p in (tmp_path / "csv" / "version_0" / "explain_images" / "explain" / "gradcam").iterdir()
    )
    assert files == ["epoch=0000-step=0000002.png", "epoch=0001-step=0000005.png"]


def test_background_writer_bounds_its_queue_and_reports_errors_on_flush():
    writer = BackgroundWriter(max_pending=2)
    gate = threading.Event()
    writer.submit(gate.wait)  # the thread is busy until the gate opens
    writer.submit(lambda: None)
    writer.submit(lambda: None)
    blocked = threading.Thread(target=writer.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # a full queue makes the caller wait: nothing is dropped
    gate.set()
    blocked.join(5)
    writer.flush()
    assert writer.pending() == 0

    def fail() -> None:
        raise OSError("no space left on device")

    writer.submit(fail)
    with pytest.raises(RuntimeError, match="no space left on device"):
        writer.flush()
    writer.flush()  # reported once
    writer.close()  # its thread stops (later tests count the writer threads left)
    assert not writer.alive()


class _RecordingRichBar(RichProgressBar):
    """Lightning's Rich progress bar, recording the tasks added to its live display."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        if self.progress is not None and not hasattr(self.progress, "_recorded"):
            add = self.progress.add_task

            def recording_add(description, *args, **kwargs):
                self.added.append(str(description))
                return add(description, *args, **kwargs)

            self.progress.add_task = recording_add
            self.progress._recorded = True


def _occlusion_fit(tmp_path, *extra, **kwargs):
    train, val = loaders()
    cb = ExplainCallback(
        methods=("gradcam", "occlusion"),
        num_probe=2,
        cell_size=32,
        metrics=False,
        method_options={"occlusion": {"window": 4, "stride": 4}},
    )
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    t = trainer(tmp_path, callbacks=[cb, *extra], max_epochs=1, logger=logger, **kwargs)
    t.fit(TinyCNN(), train, val)


def test_long_work_shows_a_bar_beside_the_trainers_and_nothing_without_it(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    _occlusion_fit(tmp_path / "tqdm", TQDMProgressBar(), enable_progress_bar=True)
    shown = capfd.readouterr()
    assert "ExplainCallback: occlusion:   0%|" in shown.err  # our bar, on stderr beside the Trainer's
    rich = _RecordingRichBar()
    _occlusion_fit(tmp_path / "rich", rich, enable_progress_bar=True)
    assert "ExplainCallback: occlusion" in rich.added
    assert not [t for t in rich.progress.tasks if "ExplainCallback" in str(t.description)]  # removed when done
    capfd.readouterr()
    _occlusion_fit(tmp_path / "off", enable_progress_bar=False)
    captured = capfd.readouterr()
    assert "occlusion" not in captured.err + captured.out


def test_rich_bar_is_added_after_the_delay_and_removed_when_done(monkeypatch):
    # No clock in the asserts: the delay is read at each update, so an hour's delay is "not yet" on any machine
    # and a zero delay is "passed"; what is checked is the behaviour on each side of it.
    live = Progress()
    monkeypatch.setattr(progress, "DELAY", 3600.0)
    with progress.reporting(_RichReporter(live, "ExplainCallback: ")), progress.task("scorecam", total=3) as bar:
        bar.update()
        assert not live.tasks  # short work shows nothing
        monkeypatch.setattr(progress, "DELAY", 0.0)
        bar.update()
        (task,) = live.tasks
        assert task.description == "ExplainCallback: scorecam" and task.completed == 2 and task.total == 3
    assert not live.tasks


def test_vectorised_crc32c_equals_tensorboards():
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    from lightning_explain.output._crc32c import crc32c, masked_crc32c

    rng = np.random.default_rng(0)
    for n in (0, 1, 9, 1023, 1024, 4096, 4097, 3 * 4096 + 17, 70_001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == pywrap_tensorflow.crc32c(data), n
        assert masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data), n


def test_tensorboards_checksum_is_left_alone_by_default(tmp_path, monkeypatch):
    from tensorboard.summary.writer import record_writer

    monkeypatch.delenv(FAST_CRC_ENV, raising=False)
    monkeypatch.setattr(record_writer, "masked_crc32c", record_writer.masked_crc32c)  # undone after the test
    own = record_writer.masked_crc32c
    t, _cb, train, val = _run(tmp_path, epochs=1)
    t.fit(TinyCNN(), train, val)
    assert _steps(tmp_path)["explain/gradcam"] == [2]
    assert record_writer.masked_crc32c is own  # every other SummaryWriter in the process is as TensorBoard made it


def _records(path: Path) -> list[tuple[bytes, int, int]]:
    """(data, header CRC, data CRC) of each record of a TFRecord event file."""
    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        header = raw[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[at + 8 : at + 12])
        data = raw[at + 12 : at + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[at + 12 + length : at + 16 + length])
        out.append((header + data, header_crc, data_crc))
        at += 16 + length
    return out


def test_opted_in_crc_is_installed_and_writes_the_bytes_tensorboard_would(tmp_path, monkeypatch):
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    from lightning_explain.output._crc32c import masked_crc32c

    monkeypatch.setenv(FAST_CRC_ENV, "1")
    monkeypatch.setattr(record_writer, "masked_crc32c", record_writer.masked_crc32c)  # undone after the test
    t, _cb, train, val = _run(tmp_path, epochs=1)
    t.fit(TinyCNN(), train, val)
    assert record_writer.masked_crc32c is masked_crc32c  # installed by the first TensorBoard image
    assert _steps(tmp_path)["explain/gradcam"] == [2]  # TensorBoard reads the records back (it checks the CRCs)
    (events,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    records = _records(events)
    assert max(len(data) for data, _, _ in records) > 4096  # the image records, checksummed in vectorised chunks
    for data, header_crc, data_crc in records:  # each record framed exactly as TensorBoard's own function frames it
        assert header_crc == pywrap_tensorflow.masked_crc32c(data[:8])
        assert data_crc == pywrap_tensorflow.masked_crc32c(data[8:])


def _model_state(model) -> dict:
    """Everything a probe pass must give back: every module's hooks and mode, the parameters' flags and gradients
    (by identity), and the RNG states."""
    import random

    import torch

    hooks = {
        (name, kind): list(getattr(module, kind))
        for name, module in model.named_modules()
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    }
    return {
        "hooks": hooks,
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [id(p.grad) for p in model.parameters()],
        "rng": (torch.get_rng_state().tolist(), str(np.random.get_state()), random.getstate()),
    }


class _GatedTensorBoardLogger(TensorBoardLogger):
    """TensorBoard's logger whose image records wait until ``gate`` is set: images stay in flight until then."""

    def __init__(self, *args, gate: threading.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            writer = SummaryWriter(log_dir=self.log_dir)
            file_writer, gate = writer._get_file_writer(), self.gate
            add_summary = file_writer.add_summary

            def gated_add_summary(summary, *args, **kwargs):
                if any(value.HasField("image") for value in summary.value):
                    gate.wait(timeout=60)
                return add_summary(summary, *args, **kwargs)

            file_writer.add_summary = gated_add_summary
            self._experiment = writer
        return self._experiment


class _Trap(Callback):
    """Placed before the view: at epoch ``epoch`` a hook on ``features.3`` raises ``KeyboardInterrupt`` (Ctrl+C) in
    the view's first probe pass, in its forward or (through its output's gradient) in its ``autograd.grad``; it
    snapshots the model's state just before the view runs, with the trap in place."""

    def __init__(self, epoch: int, where: str) -> None:
        self.epoch, self.where, self.before, self.in_flight = epoch, where, None, -1
        self.gate = threading.Event()  # the writer's image records wait for it: set at the interrupt

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.current_epoch != self.epoch:
            return
        layer = pl_module.features[3]
        if self.where == "forward":
            layer.register_forward_pre_hook(lambda *_: self._interrupt(trainer))
        else:
            layer.register_forward_hook(lambda _m, _a, out: self._on_output(trainer, out))
        pl_module.features[0].weight.grad = pl_module.features[0].weight.detach() * 0  # a gradient to keep
        pl_module.features[0].requires_grad_(False)  # a frozen layer: the pass must not unfreeze it
        pl_module.head.train()  # a mode the pass changes (it runs in eval mode) and must put back
        self.before = _model_state(pl_module)

    def _on_output(self, trainer, out) -> None:
        if out.requires_grad:
            out.register_hook(lambda _grad: self._interrupt(trainer))

    def _interrupt(self, trainer) -> None:
        import random

        import torch

        torch.rand(1), np.random.rand(), random.random()  # the pass drew random numbers (as SmoothGrad's noise does)
        self.in_flight = _writer(trainer).pending()
        self.gate.set()
        raise KeyboardInterrupt


class _Watched(ExplainCallback):
    """ExplainCallback, with the model's state read at the moment an interrupt leaves its validation epoch end."""

    after: dict | None = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        try:
            super().on_validation_epoch_end(trainer, pl_module)
        except KeyboardInterrupt:
            self.after = _model_state(pl_module)
            raise


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_ctrl_c_inside_a_probe_pass_restores_the_model_first_and_keeps_the_images_already_handed_over(tmp_path, where):
    trap = _Trap(1, where)
    train, val = loaders()
    logger = _GatedTensorBoardLogger(str(tmp_path), name="tb", version=0, gate=trap.gate)
    view = _Watched(num_probe=3, cell_size=32, metrics=False)
    t = trainer(tmp_path, logger=logger, callbacks=[trap, view], max_epochs=3)
    with pytest.raises(SystemExit):  # Lightning turns Ctrl+C into a graceful shutdown and exits
        t.fit(TinyCNN(), train, val)
    assert trap.before is not None and view.after is not None  # the interrupt came from inside the view's pass
    for part in ("hooks", "modes", "requires_grad", "grads", "rng"):
        assert view.after[part] == trap.before[part], part  # restored before the interrupt propagated
    assert trap.in_flight > 0  # epoch 0's images were still waiting to be written when Ctrl+C came
    assert _steps(tmp_path) == {tag: [2] for tag in ("explain/gradcam", "explain/saliency", "explain/activations")}
    assert not _writer(t).alive()  # Lightning's on_exception closed this run's writer
