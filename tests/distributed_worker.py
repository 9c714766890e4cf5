"""A standalone two-process training run for tests/test_distributed.py (not a test module itself).

``python tests/distributed_worker.py OUT STRATEGY [EPOCHS]`` (STRATEGY: ``ddp``, ``ddp_bad``, ``ddp_spawn``,
``fsdp2``) fits the tiny CNN on 2 CPU processes (gloo) with ``ExplainCallback`` and ``FocusAlert``, logs to
``OUT/tb/version_0`` and writes ``OUT/rank<r>.json`` per rank: how many forward calls of the LightningModule each
rank made inside ExplainCallback's hooks (the probe passes, dry run included). ``strategy="ddp"`` re-launches this
script for rank 1, which is why it is a script: under pytest it would re-run pytest.

``ddp_monitor`` (3 epochs at most, ``min_epochs=2``) has ``EarlyStopping`` and ``ModelCheckpoint`` monitor a focus
number of ``ExplainCallback`` on every rank, and writes what each rank saw to ``OUT/monitor<r>.json``.

``fsdp2`` also fits a third time with two views that fail on rank 1 only at epoch 0 (``fsdp2_fault``: one in the
probe forward, one in the ``autograd.grad`` backward) and writes ``OUT/fault/``; ``fsdp2_strict`` is the forward
fault under ``strict=True`` (the fit stops on every rank).

``ddp`` adds ``ErrorAttribution`` and records each rank's own most-confused candidates next to rank zero's gathered
ones. ``fsdp2`` (FSDP2 ``fully_shard`` through ``ModelParallelStrategy``) runs every view between two ``Guard``
callbacks that check, on every rank, that each pass left parameter gradients, optimizer state, every module's hooks,
FSDP2's own state and the RNG states as they were; it then fits again without the views, from the same seed, and
records both runs' weights (each rank's shards).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from conftest import TinyCNN, make_dataset
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_explain import (
    ErrorAttribution,
    ExplainCallback,
    FeatureInversion,
    FeatureMaps,
    FilterGrid,
    FocusAlert,
    TCAVCallback,
)

#: The focus number EarlyStopping and ModelCheckpoint monitor in the ``ddp_monitor`` run.
MONITORED = "explain/saliency/focus/border_energy"

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
        self.extra: dict[str, Any] = {}

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
                "weights": weight_digest(pl_module),
                **self.counter.extra,
                "global_rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
                "probe_forward_calls": self.counter.probe_calls,
                # Per view, a digest of the probe it explains (images and labels) on this rank.
                "probes": {
                    type(cb).__name__: probe_digest(cb._probe)
                    for cb in trainer.callbacks
                    if getattr(cb, "_probe", None) is not None
                },
                "all_forward_calls": self.counter.calls,
                "epochs": trainer.current_epoch,
            }
            (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        self.counter.close()


#: The epoch at which the ``fsdp2_fault`` run's views fail on rank 1 only.
FAULT_EPOCH = 0


class Fault(Callback):
    """Placed before a view: at :data:`FAULT_EPOCH`, on global rank 1 only, arms a fault in the view's first probe
    pass; ``disarm()`` (a callback placed after the view) removes it. ``where="forward"``: the head's Linear raises
    an out-of-memory error in its forward (after FSDP2 gathered the head); ``"backward"``: the gradient of its input
    raises during ``autograd.grad`` (inside the head's backward, after FSDP2 gathered the head again). The time of
    the raise goes to ``record[f"fault_{where}"]``."""

    def __init__(self, where: str, record: dict[str, Any]) -> None:
        self.where, self.record, self.handle = where, record, None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch != FAULT_EPOCH or trainer.global_rank != 1:
            return
        layer = pl_module.head[3]
        if self.where == "forward":
            self.handle = layer.register_forward_pre_hook(lambda *_: self._raise())
        else:
            self.handle = layer.register_forward_pre_hook(lambda _m, args: self._on_input(args[0]))

    def _on_input(self, x: Tensor) -> None:
        if x.requires_grad:
            x.register_hook(lambda _grad: self._raise())

    def _raise(self) -> None:
        self.record[f"fault_{self.where}"] = time.time()
        raise torch.OutOfMemoryError(f"injected out of memory in the probe {self.where} on rank 1")

    def disarm(self, view: ExplainCallback) -> Callback:
        fault = self

        class Disarm(Callback):
            def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if fault.handle is not None:
                    fault.handle.remove()
                    fault.handle = None
                if not trainer.sanity_checking:  # when this rank went past the view, and the view's chunk size
                    fault.record.setdefault(f"done_{fault.where}", []).append(time.time())
                    chunk = view._memory.chunk if view._memory is not None else None
                    fault.record.setdefault(f"chunk_{fault.where}", []).append(chunk)

        return Disarm()


def FAULT_VIEWS(record: dict[str, Any]) -> list[Callback]:
    """Two views, each between its :class:`Fault` and the fault's ``disarm``: a forward fault in ExplainCallback's pass
    and a backward fault in a saliency-only ExplainCallback's pass, both on rank 1 at :data:`FAULT_EPOCH`."""
    views: list[Callback] = []
    for where, view in (
        ("forward", ExplainCallback(num_probe=4)),
        ("backward", ExplainCallback(num_probe=4, methods=("saliency",), tag_prefix="backward")),
    ):
        fault = Fault(where, record)
        views += [fault, view, fault.disarm(view)]
    return views


def SHARDED_VIEWS() -> list[Callback]:
    """The other views: under FSDP2 every rank joins their passes too."""
    concept = make_dataset(8, seed=3).tensors[0] * 0.5
    return [
        ErrorAttribution(num_probe=4, max_batches=2, num_confused=4),
        FeatureMaps(num_probe=4),
        FilterGrid(),
        FeatureInversion("features.3", every_n_epochs=1, steps=2, num_probe=4, progress=False),
        TCAVCallback("features.3", {"dim": concept}, num_random=2, set_size=4, num_class_examples=8, cav_steps=20),
    ]


def _local(t: Tensor) -> Tensor:
    """This rank's shard of a (possibly FSDP2-sharded, ``DTensor``) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def _simple(obj: Any) -> dict[str, str]:
    return {
        k: repr(v)
        for k, v in vars(obj).items()
        if isinstance(v, (bool, int, float, str, type(None))) or hasattr(v, "name")
    }


def _state(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
    """Everything a probe pass must leave as it found it, on this rank."""
    hooks = {}
    for name, sub in module.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            hooks[f"{name}.{attr}"] = [
                (k, qualname)
                for k, f in getattr(sub, attr).items()
                # ErrorAttribution's own collecting hook lives for the validation epoch, and ends in this window
                if "on_validation_epoch_start" not in (qualname := getattr(f, "__qualname__", repr(f)))
            ]
        fsdp = getattr(sub, "_get_fsdp_state", None)
        if fsdp is not None:
            state = fsdp()
            group = state._fsdp_param_group
            hooks[f"{name}.fsdp"] = [_simple(state), _simple(group) if group is not None else None]
    params = {n: (type(p).__name__, p.requires_grad, _local(p).data_ptr()) for n, p in module.named_parameters()}
    grads = {n: None if p.grad is None else _local(p.grad).clone() for n, p in module.named_parameters()}
    optim = [
        {
            (i, k): _local(v).clone() if isinstance(v, Tensor) else v
            for i, st in enumerate(o.state.values())
            for k, v in st.items()
        }
        for o in trainer.optimizers
    ]
    rng = (torch.get_rng_state(), repr(np.random.get_state()), random.getstate())
    modes = [m.training for m in module.modules()]
    return {"hooks": hooks, "params": params, "grads": grads, "optim": optim, "rng": rng, "modes": modes}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class Guard(Callback):
    """Before the views (``where="before"``): give every parameter a sentinel gradient and snapshot :func:`_state`;
    after them (the same object, ``where="after"``): compare, record which parts changed, and put the original
    gradients back. ``record["checks"]`` holds one list of changed parts per pass."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        record["checks"] = []
        self.before: dict[str, Any] = {}
        self.original: dict[str, Tensor | None] = {}

    def side(self, where: str) -> Callback:
        guard = self

        class Side(Callback):
            def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                guard.check(where, trainer, pl_module)

            def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if not trainer.sanity_checking:
                    guard.check(where, trainer, pl_module)

        return Side()

    def check(self, where: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if where == "before":
            self.original = {n: p.grad for n, p in pl_module.named_parameters()}
            for p in pl_module.parameters():
                p.grad = torch.full_like(p, 0.25)  # a sentinel: a pass that accumulated into .grad would change it
            self.before = _state(trainer, pl_module)
            return
        after = _state(trainer, pl_module)
        changed = []
        for part, value in after.items():
            old = self.before[part]
            if isinstance(value, dict):
                changed += [f"{part}:{k}" for k in value if not _same(old.get(k), value[k])]
            elif not _same(old, value):
                changed.append(part)
        self.record["checks"].append(changed)
        for n, p in pl_module.named_parameters():
            p.grad = self.original[n]


def probe_digest(probe: Any) -> str:
    """SHA-256 of a view's probe images and labels (on the CPU)."""
    digest = hashlib.sha256()
    for t in (probe.images, probe.labels):
        if t is not None:
            digest.update(f"{tuple(t.shape)} {t.dtype}".encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weight_digest(module: torch.nn.Module) -> str:
    """A digest of this rank's parameter shards and buffers."""
    digest = hashlib.sha256()
    for t in [*module.parameters(), *module.buffers()]:
        digest.update(_local(t).detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build(out: Path, strategy: str, epochs: int = 2) -> tuple[pl.Trainer, pl.LightningModule, DataLoader, DataLoader]:
    """The trainer, model and loaders of the run (also used in-process by the ``ddp_spawn`` test)."""
    counter = ForwardCounter()
    callbacks: list[Callback] = [
        Mark(counter, "start"),
        # "ddp_bad": a class index the 3-class model does not have; only rank 0's dry run can notice.
        ExplainCallback(num_probe=4, targets=7 if strategy == "ddp_bad" else "predicted"),
        *(SHARDED_VIEWS() if strategy == "fsdp2" else []),
        Mark(counter, "end", out),
        # A collective of its own (reduce_boolean_decision) on every rank: must not deadlock with rank-0 compute.
        FocusAlert("explain/gradcam/focus/border_lift", threshold=10.0, patience=1, stop_training=False),
    ]
    if strategy == "fsdp2":
        guard = Guard(counter.extra)
        callbacks.insert(1, guard.side("before"))
        callbacks.insert(-2, guard.side("after"))
    elif strategy == "fsdp2_plain":
        callbacks = [Mark(counter, "end", out)]
    elif strategy == "fsdp2_strict":  # the forward fault under strict=True: every rank stops with the cause
        fault, view = Fault("forward", counter.extra), ExplainCallback(num_probe=4, strict=True)
        callbacks = [fault, view, fault.disarm(view), Mark(counter, "end", out)]
    elif strategy == "fsdp2_fault":
        guard = Guard(counter.extra)
        callbacks = [guard.side("before"), *FAULT_VIEWS(counter.extra), guard.side("after"), Mark(counter, "end", out)]
    elif strategy == "ddp":
        errors = ErrorAttribution(num_probe=4, num_confused=4)
        callbacks += [Spy(errors, "local", counter.extra), errors, Spy(errors, "gathered", counter.extra)]
    elif strategy == "ddp_monitor":
        # stopping_threshold: any value stops, so the run ends after min_epochs=2 of 3, on every rank alike
        stop = EarlyStopping(MONITORED, mode="max", stopping_threshold=-1.0, check_finite=False)
        best = ModelCheckpoint(out / "checkpoints", "best", monitor=MONITORED, mode="max", save_top_k=1)
        callbacks = [ExplainCallback(num_probe=4, methods=("saliency",)), stop, best, Monitored(stop, best, out)]
        epochs = 3
    # A short process-group timeout for the fault run: a rank left waiting in a collective fails within it.
    timeout = timedelta(seconds=30 if strategy in ("fsdp2_fault", "fsdp2_strict") else 120)
    torch.manual_seed(0)
    model: pl.LightningModule = TinyCNN()
    strategy_obj: Strategy
    if strategy.startswith("fsdp2"):  # FSDP (v1) needs an accelerator in torch; FSDP2's fully_shard runs on CPU + gloo
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
        enable_checkpointing=strategy == "ddp_monitor",
        min_epochs=2 if strategy == "ddp_monitor" else None,
    )
    train = DataLoader(make_dataset(24, seed=1), batch_size=4)
    val = DataLoader(make_dataset(16, seed=2), batch_size=4)
    return trainer, model, train, val


class Monitored(Callback):
    """Writes ``OUT/monitor<rank>.json`` at teardown: what ``EarlyStopping`` and ``ModelCheckpoint`` saw here."""

    def __init__(self, stop: EarlyStopping, best: ModelCheckpoint, out: Path) -> None:
        self.stop, self.best, self.out = stop, best, out

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        value = trainer.callback_metrics.get(MONITORED)
        score = self.best.best_model_score
        record = {
            "epochs": trainer.current_epoch,
            "last_value": None if value is None else float(value),
            "early_stopping_best": float(self.stop.best_score),
            "checkpoint_best": None if score is None else float(score),
            "checkpoint_path": self.best.best_model_path,
        }
        (self.out / f"monitor{trainer.global_rank}.json").write_text(json.dumps(record))


class Spy(Callback):
    """Records ErrorAttribution's candidates at the validation epoch end: this rank's own (placed before it) or the
    gathered ones (placed after it)."""

    def __init__(self, errors: ErrorAttribution, what: str, record: dict[str, Any]) -> None:
        self.errors, self.what, self.record = errors, what, record

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            seen = self.errors._candidates if self.what == "local" else self.errors.most_confused
            pairs = list(zip(seen.indices.tolist(), seen.confidence.tolist(), strict=True))
            self.record.setdefault(self.what, []).append(pairs)


def main() -> None:
    out, strategy = Path(sys.argv[1]), sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    out.mkdir(parents=True, exist_ok=True)
    trainer, model, train, val = build(out, strategy, epochs)
    started = time.perf_counter()
    trainer.fit(model, train, val)
    seconds = [time.perf_counter() - started]
    if strategy == "fsdp2":  # the same run without the views, in the same processes and process group
        (out / "plain").mkdir(exist_ok=True)
        trainer, model, train, val = build(out / "plain", "fsdp2_plain", epochs)
        started = time.perf_counter()
        trainer.fit(model, train, val)
        seconds.append(time.perf_counter() - started)
        agree(trainer.strategy, out)
        # Views that fail on rank 1 only at epoch FAULT_EPOCH (forward and backward): every rank skips them there,
        # training goes on in step; the weights are compared with the plain run's (no views at all).
        (out / "fault").mkdir(exist_ok=True)
        trainer, model, train, val = build(out / "fault", "fsdp2_fault", epochs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, train, val)
        skipped = [str(w.message) for w in caught if "every rank skips" in str(w.message)]
        (out / "fault" / f"warnings{trainer.global_rank}.json").write_text(json.dumps(skipped))
    (out / f"seconds{trainer.global_rank}.json").write_text(json.dumps(seconds))  # fit wall times, views first


def agree(strategy: Strategy, out: Path) -> None:
    """A failure inside :func:`together` / :func:`broadcast_from_zero` on one rank only, in the run's process group;
    every rank records what it raised (``OUT/agree<rank>.json``)."""
    from lightning_explain.epoch.distributed import broadcast_from_zero, together

    rank = strategy.global_rank
    seen: list[str] = []

    def fail_on_rank_1() -> int:
        if rank == 1:
            raise ValueError("bad layer on rank 1")
        return rank

    def read_on_zero() -> str:
        raise OSError("probe file missing")

    works = [
        lambda: together(strategy, fail_on_rank_1, "View"),
        lambda: broadcast_from_zero(strategy, read_on_zero, "View"),
    ]
    for work in works:
        try:
            work()
            seen.append("no error")
        except Exception as err:
            seen.append(f"{type(err).__name__}: {err}")
    seen.append(str(together(strategy, lambda: rank * 10, "View")))
    (out / f"agree{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
