"""Which training strategies a rank-zero-only probe pass is safe under.

The callbacks compute on global rank zero only and call the LightningModule itself (never the DDP wrapper).
Under data-parallel strategies (DDP, ``ddp_spawn``, DeepSpeed stages 1-2) every rank holds all parameters, so a
forward on rank zero alone needs no other rank. Under strategies that shard the parameters (FSDP, FSDP2 /
``ModelParallelStrategy``, DeepSpeed ZeRO stage 3) every forward gathers parameters from all ranks: a forward
on rank zero alone waits for ranks that never join, and the run hangs until the process-group timeout. Those
strategies are recognised here by class name (nothing is imported: DeepSpeed need not be installed), and the
callbacks skip their work under them with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = [
    "SHARDED_STRATEGIES",
    "check_sharded",
    "fail_together",
    "sharded_skip_message",
    "sharded_strategy",
    "start_together",
]

#: Strategy classes (or base classes) whose forward needs every rank.
SHARDED_STRATEGIES = frozenset({"FSDPStrategy", "ModelParallelStrategy", "XLAFSDPStrategy"})


def sharded_strategy(strategy: Any) -> str | None:
    """A description of ``strategy`` when it shards parameters across ranks, else None.

    Looks at the class names along the strategy's MRO, so subclasses count too; a DeepSpeed strategy counts
    when its config asks for ZeRO stage 3 (stages 1 and 2 shard optimiser state and gradients only).

    Example:
        >>> from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
        >>> sharded_strategy(FSDPStrategy()), sharded_strategy(DDPStrategy())
        ('FSDPStrategy', None)
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    if names & SHARDED_STRATEGIES:
        return type(strategy).__name__
    if "DeepSpeedStrategy" in names:
        config = getattr(strategy, "config", None)
        zero = config.get("zero_optimization") if isinstance(config, dict) else None
        if isinstance(zero, dict) and zero.get("stage") == 3:
            return f"{type(strategy).__name__} (ZeRO stage 3)"
    return None


def sharded_skip_message(owner: str, strategy: str) -> str:
    """The warning a callback gives when it skips its work under a sharded strategy."""
    return (
        f"{owner} is disabled for this run: the {strategy} strategy shards the model's parameters across ranks, "
        "so a probe forward on rank zero alone would wait for the other ranks and hang the run. Nothing will be "
        "explained or logged. To explain such a model, use strategy='ddp' (or a single device), or load a "
        "checkpoint into a single-device Trainer and run trainer.validate(model, val_dataloaders) with this "
        "callback."
    )


def fail_together(strategy: Any, error: BaseException | None, owner: str) -> None:
    """Turn a setup failure on global rank zero into the same failure on every rank, at the same point.

    Call it on every rank (it broadcasts once from rank zero when there are several processes). Without it the
    other ranks would go on into training and wait in their first gradient all-reduce for a rank that has
    stopped: gloo notices the closed connection, NCCL may wait until its timeout.

    Raises:
        The rank-zero ``error`` itself on rank zero; a ``RuntimeError`` quoting it on the other ranks.
    """
    message = None if error is None else f"{type(error).__name__}: {error}"
    if int(getattr(strategy, "world_size", 1)) > 1:
        message = strategy.broadcast(message, src=0)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"{owner} failed at setup on global rank 0, so every rank stops: {message}")


def check_sharded(trainer: Any, owner: str) -> str | None:
    """:func:`sharded_strategy` of the trainer's strategy; when it shards, ``owner``'s skip warning from rank zero."""
    sharded = sharded_strategy(trainer.strategy)
    if sharded is not None and trainer.is_global_zero:
        warnings.warn(sharded_skip_message(owner, sharded), UserWarning, stacklevel=3)
    return sharded


def start_together(trainer: Any, start: Callable[[], None], owner: str) -> None:
    """Run ``start`` (setup checks that read data or run the model) on global rank zero; every rank then learns
    whether it failed (:func:`fail_together`), so no rank trains on while rank zero has stopped."""
    error: Exception | None = None
    if trainer.is_global_zero:
        try:
            start()
        except Exception as err:
            error = err
    fail_together(trainer.strategy, error, owner)
