"""Resume from a checkpoint and a 100-epoch run: continuous history, no duplicates, no leaks."""

from __future__ import annotations

import gc
import os

import pytest
import torch
from conftest import TinyCNN, loaders, make_dataset, read_event_images, trainer
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_explain import ExplainCallback
from lightning_explain.functional.metrics import drift_report

TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}


class _AfterExplain(Callback):
    """Placed after ExplainCallback: records what it holds at the end of each explained epoch."""

    def __init__(self, explain: ExplainCallback) -> None:
        self.explain = explain
        self.per_image: dict[int, dict[str, torch.Tensor]] = {}
        self.maps: dict[int, torch.Tensor] = {}
        self.rss: dict[int, int] = {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        self.per_image[epoch] = dict(self.explain.latest_per_image)
        self.maps[epoch] = self.explain._map_metrics.previous["gradcam"].clone()  # this epoch's (pooled) maps
        if epoch in (0, 9, 49, 99):
            gc.collect()
            self.rss[epoch] = _rss_bytes()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_resume_continues_probe_history_and_steps_without_duplicates(tmp_path):
    train, val = loaders()
    ckpt_dir = tmp_path / "ckpt"

    first = ExplainCallback(num_probe=5)
    spy1 = _AfterExplain(first)
    t1 = trainer(
        tmp_path,
        logger=TensorBoardLogger(str(tmp_path), name="tb", version=0),
        callbacks=[first, spy1, ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)],
        enable_checkpointing=True,
        max_epochs=2,
    )
    t1.fit(TinyCNN(), train, val)
    history = {k: dict(v) for k, v in first._map_metrics.state_dict().items()}

    second = ExplainCallback(num_probe=5)
    spy2 = _AfterExplain(second)
    other_val = DataLoader(make_dataset(24, seed=99), batch_size=8)  # different data: the probe must not change
    t2 = trainer(
        tmp_path,
        logger=TensorBoardLogger(str(tmp_path), name="tb", version=0),  # the same run directory
        callbacks=[second, spy2],
        max_epochs=4,
    )
    t2.fit(TinyCNN(), train, other_val, ckpt_path=str(ckpt_dir / "last.ckpt"))

    assert torch.equal(second._probe.images, first._probe.images)  # bit-identical probe
    assert torch.equal(second._probe.labels, first._probe.labels)
    assert sorted(spy2.per_image) == [2, 3]
    # Epoch 2's drift compares with epoch 1's maps (from before the restart) and with epoch 0's.
    assert torch.equal(spy1.maps[1], history["previous"]["gradcam"])
    expected = drift_report(spy2.maps[2], spy1.maps[1], spy1.maps[0])
    for name in ("emd_prev", "emd_first", "com_shift_prev", "topk_iou_first", "spearman_prev"):
        got = spy2.per_image[2][f"explain/gradcam/drift/{name}"]
        torch.testing.assert_close(got, expected[name], equal_nan=True, msg=name)
    assert "explain/gradcam/drift/emd_prev" in spy2.per_image[2]

    # One event file per fit in the same directory; together exactly one image per tag per epoch 0..3.
    log_dir = tmp_path / "tb" / "version_0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    images = read_event_images(log_dir)
    assert set(images) == TAGS
    for tag, events in images.items():
        assert [step for step, _ in events] == [2, 5, 8, 11], tag  # steps continue across the restart


def _hooks(model: torch.nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, name)) for m in model.modules() for name in names)


def _global_hooks() -> int:
    from torch.nn.modules import module

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    return sum(len(getattr(module, name, {})) for name in names)


@pytest.fixture
def one_thread():
    """One intra-op thread: the EMD's many tiny ops run ~8x slower with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_100_validation_epochs_no_memory_growth_no_hooks_left(tmp_path, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = 100
    model = TinyCNN()
    train, val = loaders(n=8, size=8, batch_size=4)
    cb = ExplainCallback(methods=("gradcam", "activations"), num_probe=4, cell_size=32)
    spy = _AfterExplain(cb)
    hooks_before, global_before = _hooks(model), _global_hooks()
    t = trainer(
        tmp_path,
        logger=TensorBoardLogger(str(tmp_path), name="tb", version=0),
        callbacks=[cb, spy],
        max_epochs=epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    t.fit(model, train, val)

    growth = spy.rss[epochs - 1] - spy.rss[0]
    print("RSS MiB after epochs 0, 9, 49, 99:", [round(v / 2**20, 1) for v in spy.rss.values()])
    assert growth < 50 * 2**20
    assert _hooks(model) == hooks_before == 0 and _global_hooks() == global_before

    log_dir = tmp_path / "tb" / "version_0"
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = {"explain/gradcam", "explain/activations"}
    assert set(acc.Tags()["images"]) == tags
    image_bytes = 0
    for tag in tags:
        events = acc.Images(tag)
        assert [e.step for e in events] == list(range(epochs)), tag
        image_bytes += sum(len(e.encoded_image_string) for e in events)
    # The event file grows by the PNGs plus a few KB of scalars per epoch: nothing else accumulates.
    size = sum(p.stat().st_size for p in log_dir.glob("events.out.tfevents.*"))
    scalar_tags = len(acc.Tags()["scalars"])
    print(f"event file {size / 2**10:.0f} KiB, images {image_bytes / 2**10:.0f} KiB, {scalar_tags} scalar tags")
    assert image_bytes < size < image_bytes + epochs * (scalar_tags * 100 + 4096)
