"""A standalone two-process training run for tests/test_distributed.py (not a test module itself).

``python tests/distributed_worker.py OUT STRATEGY [EPOCHS]`` (STRATEGY: ``ddp``, ``ddp_bad``, ``ddp_spawn``,
``fsdp2``) fits the tiny CNN on 2 CPU processes (gloo) with ``ExplainCallback`` and ``FocusAlert``, logs to
``OUT/tb/version_0`` and writes ``OUT/rank<r>.json`` per rank: how many forward calls of the LightningModule each
rank made inside ExplainCallback's hooks (the probe passes, dry run included). ``strategy="ddp"`` re-launches this
script for rank 1, which is why it is a script: under pytest it would re-run pytest.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from conftest import TinyCNN, make_dataset
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch.utils.data import DataLoader

from lightning_explain import (
    ErrorAttribution,
    ExplainCallback,
    FeatureInversion,
    FeatureMaps,
    FilterGrid,
    FocusAlert,
)

#: Hooks of ExplainCallback in which it may compute; forward calls made inside them are probe passes.
EXPLAIN_HOOKS = ("on_train_start", "on_validation_epoch_end")


class ShardedTinyCNN(TinyCNN):
    """TinyCNN with its parameters sharded over the data-parallel ranks (FSDP2 ``fully_shard``)."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for module in (self.features, self.head):
            fully_shard(module, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        import torch

        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class ForwardCounter:
    """Counts forward calls of a module (a forward hook, removed in ``close``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.probe_calls = 0
        self.before = 0
        self.handle: Any = None

    def attach(self, module: pl.LightningModule) -> None:
        if self.handle is None:
            self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class Mark(Callback):
    """Placed before (``start``) and after (``end``) ExplainCallback: the forward calls in between are its own."""

    def __init__(self, counter: ForwardCounter, where: str, out: Path | None = None) -> None:
        self.counter, self.where, self.out = counter, where, out
        for hook in EXPLAIN_HOOKS:
            setattr(self, hook, self._mark)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.counter.attach(pl_module)

    def _mark(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.where == "start":
            self.counter.before = self.counter.calls
        else:
            self.counter.probe_calls += self.counter.calls - self.counter.before

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.where == "end" and self.out is not None:
            record = {
                "global_rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
                "probe_forward_calls": self.counter.probe_calls,
                "all_forward_calls": self.counter.calls,
                "epochs": trainer.current_epoch,
            }
            (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        self.counter.close()


def SHARDED_VIEWS() -> list[Callback]:
    """The other views, which must skip under a sharded strategy too (their forwards would hang as well)."""
    return [
        ErrorAttribution(num_probe=4, max_batches=2),
        FeatureMaps(num_probe=4),
        FilterGrid(),
        FeatureInversion("features.3", every_n_epochs=1, steps=2, num_probe=4, progress=False),
    ]


def build(out: Path, strategy: str, epochs: int = 2) -> tuple[pl.Trainer, pl.LightningModule, DataLoader, DataLoader]:
    """The trainer, model and loaders of the run (also used in-process by the ``ddp_spawn`` test)."""
    counter = ForwardCounter()
    callbacks = [
        Mark(counter, "start"),
        # "ddp_bad": a class index the 3-class model does not have; only rank 0's dry run can notice.
        ExplainCallback(num_probe=4, targets=7 if strategy == "ddp_bad" else "predicted"),
        *(SHARDED_VIEWS() if strategy == "fsdp2" else []),
        Mark(counter, "end", out),
        # A collective of its own (reduce_boolean_decision) on every rank: must not deadlock with rank-0 compute.
        FocusAlert("explain/gradcam/focus/border_lift", threshold=10.0, patience=1, stop_training=False),
    ]
    timeout = timedelta(seconds=120)
    model: pl.LightningModule = TinyCNN()
    strategy_obj: Strategy
    if strategy == "fsdp2":  # FSDP (v1) needs an accelerator in torch; FSDP2's fully_shard runs on CPU + gloo
        strategy_obj = ModelParallelStrategy(
            data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo", timeout=timeout
        )
        model = ShardedTinyCNN()
    else:
        start_method = "spawn" if strategy == "ddp_spawn" else "popen"
        strategy_obj = DDPStrategy(process_group_backend="gloo", start_method=start_method, timeout=timeout)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy_obj,
        max_epochs=epochs,
        logger=TensorBoardLogger(str(out), name="tb", version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train = DataLoader(make_dataset(24, seed=1), batch_size=4)
    val = DataLoader(make_dataset(16, seed=2), batch_size=4)
    return trainer, model, train, val


def main() -> None:
    out, strategy = Path(sys.argv[1]), sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    out.mkdir(parents=True, exist_ok=True)
    trainer, model, train, val = build(out, strategy, epochs)
    trainer.fit(model, train, val)


if __name__ == "__main__":
    main()
