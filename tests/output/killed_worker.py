"""A training run to be killed with SIGKILL while its background writer holds images (tests/output/test_killed_run.py).

Usage: ``python killed_worker.py LOGDIR``. Image records take 0.1 s each on this "slow disk", so images are queued at
any moment; at the start of each training epoch from the fifth on, once two epochs' grids are on disk, it prints
``PENDING <n>`` (the images the ExplainCallback's writer holds) and flushes stdout; the test kills it then.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import TinyCNN, loaders, slow_tensorboard_logger, trainer
from pytorch_lightning.callbacks import Callback

from lightning_explain import ExplainCallback

SLOW_SECONDS = 0.1
#: Image records on disk so far: the kill waits for two epochs' grids (each epoch logs three: Grad-CAM, saliency,
#: activations), so the test sees complete records before the torn tail however slow the machine is.
WRITTEN = [0]
ON_DISK_BEFORE_KILL = 6


class _Report(Callback):
    def __init__(self, view: ExplainCallback) -> None:
        self.view = view

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= 4 and WRITTEN[0] >= ON_DISK_BEFORE_KILL and self.view._sink.writer is not None:
            print(f"PENDING {self.view._sink.writer.pending()}", flush=True)


if __name__ == "__main__":
    train, val = loaders(n=16, size=16)
    view = ExplainCallback("features.3", num_probe=2, cell_size=32, metrics=False)

    def written() -> None:
        WRITTEN[0] += 1

    logger = slow_tensorboard_logger(sys.argv[1], "killed", "v0", SLOW_SECONDS, flush_each=True, on_image=written)
    fit = trainer(
        Path(sys.argv[1]) / "work", max_epochs=1000, logger=logger, callbacks=[view, _Report(view)], log_every_n_steps=1
    )
    fit.fit(TinyCNN(), train, val)
