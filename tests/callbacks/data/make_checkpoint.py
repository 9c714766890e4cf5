"""Write ``checkpoint_v<version>.ckpt`` next to this file: a checkpoint of this release, kept in the tests.

``python tests/callbacks/data/make_checkpoint.py`` fits the tests' tiny CNN for 2 epochs on 16 px images with
``ExplainCallback`` and ``FocusAlert`` and keeps the last checkpoint (model, optimizer, loops and both callbacks'
states). Run it once per release whose checkpoint format should stay loadable, and commit the file:
tests/callbacks/test_checkpoint_resume.py resumes every ``checkpoint_v*.ckpt`` in this folder with today's code.
The probe is the first 4 validation samples of ``make_dataset(24, seed=2)``; the test checks it comes back.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The probe the checkpoint holds: the first NUM_PROBE samples of make_dataset(24, seed=VAL_SEED).
NUM_PROBE, VAL_SEED = 4, 2
#: FocusAlert's monitor and threshold in the checkpoint (its state_key is built from them).
MONITOR, THRESHOLD = "explain/gradcam/focus/border_lift", 10.0


def main() -> Path:
    sys.path[:0] = [str(HERE.parents[2]), str(HERE.parents[1])]  # this checkout's package; tests/: conftest
    import pytorch_lightning as pl
    import torch
    from conftest import TinyCNN, make_dataset
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    import lightning_explain
    from lightning_explain import ExplainCallback, FocusAlert

    target = HERE / f"checkpoint_v{lightning_explain.__version__}.ckpt"
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        saver = ModelCheckpoint(dirpath=tmp, save_last=True, save_top_k=0)
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
            callbacks=[
                ExplainCallback(num_probe=NUM_PROBE),
                FocusAlert(MONITOR, threshold=THRESHOLD, patience=1, stop_training=False),
                saver,
            ],
        )
        train = DataLoader(make_dataset(24, seed=1), batch_size=8)
        val = DataLoader(make_dataset(24, seed=VAL_SEED), batch_size=8)
        trainer.fit(TinyCNN(), train, val)
        shutil.copyfile(Path(tmp) / "last.ckpt", target)
    return target


if __name__ == "__main__":
    path = main()
    print(f"wrote {path} ({path.stat().st_size} bytes)")
