"""A training run to be killed with SIGKILL while its background writer holds images (tests/output/test_killed_run.py).

Usage: ``python killed_worker.py LOGDIR``. Image records take 0.1 s each on this "slow disk", so images are queued at
any moment; at the start of each training epoch from the fifth on, once two epochs' grids are on disk, it prints
``PENDING <n>`` (the images the ExplainCallback's writer holds) and flushes stdout; the test kills it then.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import TinyCNN, loaders, trainer
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from lightning_explain import ExplainCallback

SLOW_SECONDS = 0.1
#: Image records on disk so far: the kill waits for two epochs' grids (each epoch logs three: Grad-CAM, saliency,
#: activations), so the test sees complete records before the torn tail however slow the machine is.
WRITTEN = [0]
ON_DISK_BEFORE_KILL = 6


class _SlowSummaryWriter(SummaryWriter):
    def _get_file_writer(self):
        file_writer = super()._get_file_writer()
        if not getattr(file_writer, "_slow", False):
            add_summary = file_writer.add_summary

            def slow_add_summary(summary, *args, **kwargs):
                if any(value.HasField("image") for value in summary.value):
                    time.sleep(SLOW_SECONDS)
                add_summary(summary, *args, **kwargs)
                file_writer.flush()  # each record on disk at once: what is complete is there when the kill comes
                WRITTEN[0] += any(value.HasField("image") for value in summary.value)

            file_writer.add_summary, file_writer._slow = slow_add_summary, True
        return file_writer


class SlowTensorBoardLogger(TensorBoardLogger):
    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _SlowSummaryWriter(log_dir=self.log_dir)
        return self._experiment


class _Report(Callback):
    def __init__(self, view: ExplainCallback) -> None:
        self.view = view

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= 4 and WRITTEN[0] >= ON_DISK_BEFORE_KILL and self.view._sink.writer is not None:
            print(f"PENDING {self.view._sink.writer.pending()}", flush=True)


if __name__ == "__main__":
    train, val = loaders(n=16, size=16)
    view = ExplainCallback("features.3", num_probe=2, cell_size=32, metrics=False)
    logger = SlowTensorBoardLogger(sys.argv[1], name="killed", version="v0")
    fit = trainer(
        Path(sys.argv[1]) / "work", max_epochs=1000, logger=logger, callbacks=[view, _Report(view)], log_every_n_steps=1
    )
    fit.fit(TinyCNN(), train, val)
