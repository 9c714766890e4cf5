"""How the views run under each training strategy, and the collectives that keep the ranks together.

The callbacks call the LightningModule itself (never the DDP wrapper). Under data-parallel strategies (DDP,
``ddp_spawn``, DeepSpeed stages 1-2) every rank holds all parameters, so the probe pass runs on global rank zero
alone. Under strategies that shard the parameters every forward gathers parameters from all ranks, so a forward
on rank zero alone would wait for ranks that never join:

- FSDP2 (``fully_shard``) through Lightning's ``ModelParallelStrategy`` (:data:`JOINED_STRATEGIES`): every rank
  joins every probe pass (the same probe, broadcast from rank zero, the same collectives in the same order), the
  maps are computed on every rank and rank zero alone logs them. A failure on one rank at setup stops every rank
  (:func:`together`); one inside a view's passes is learnt by every rank at its next status check, and every rank
  skips the view for that epoch (or stops, under ``strict=True``): :mod:`lightning_explain.epoch.joined`.
- FSDP (v1), XLA FSDP and DeepSpeed ZeRO stage 3 (:data:`SHARDED_STRATEGIES` minus the joined ones): not run
  on this project's CPU test machine (FSDP v1 and Lightning's DeepSpeed strategy need an accelerator), so the
  views skip their work under them with one warning. They are recognised by class name (nothing is imported:
  DeepSpeed need not be installed).

Validation data is sharded under every multi-process strategy: :func:`all_gather_objects` gathers small
per-rank results (the top-k wrong predictions, never the data) so rank zero sees every rank's share.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_explain.epoch.joined import status_point

T = TypeVar("T")

__all__ = [
    "JOINED_STRATEGIES",
    "SHARDED_STRATEGIES",
    "all_gather_objects",
    "broadcast_from_zero",
    "check_sharded",
    "fail_together",
    "full_tensor",
    "joins_every_rank",
    "sharded_skip_message",
    "sharded_strategy",
    "start_together",
    "together",
    "world_size",
]

#: Strategy classes (or base classes) whose forward needs every rank.
SHARDED_STRATEGIES = frozenset({"FSDPStrategy", "ModelParallelStrategy", "XLAFSDPStrategy"})
#: Sharded strategies under which every rank joins the probe pass (tested on CPU processes with gloo).
JOINED_STRATEGIES = frozenset({"ModelParallelStrategy"})


def world_size(strategy: Any) -> int:
    """The number of processes of ``strategy`` (1 for single-device strategies)."""
    return int(getattr(strategy, "world_size", 1) or 1)


def joins_every_rank(strategy: Any) -> bool:
    """Whether every rank runs the probe pass under ``strategy`` (FSDP2 / ``ModelParallelStrategy``, several ranks).

    Example:
        >>> from pytorch_lightning.strategies import DDPStrategy
        >>> joins_every_rank(DDPStrategy())
        False
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    return bool(names & JOINED_STRATEGIES) and world_size(strategy) > 1


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
        "explained or logged. To explain such a model, use FSDP2 (ModelParallelStrategy with fully_shard in "
        "configure_model), strategy='ddp' (or a single device), or load a checkpoint into a single-device Trainer "
        "and run trainer.validate(model, val_dataloaders) with this callback."
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
    """:func:`sharded_strategy` of the trainer's strategy when the views cannot run under it (it shards and is not
    one of :data:`JOINED_STRATEGIES`), with ``owner``'s skip warning from rank zero; else None."""
    sharded = sharded_strategy(trainer.strategy)
    if sharded is not None and {c.__name__ for c in type(trainer.strategy).__mro__} & JOINED_STRATEGIES:
        return None
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


def _distributed(strategy: Any) -> bool:
    return world_size(strategy) > 1 and dist.is_available() and dist.is_initialized()


def all_gather_objects(strategy: Any, obj: T) -> list[T]:
    """``obj`` of every rank, in global rank order (``[obj]`` in a single process). Call it on every rank.

    Objects are pickled (``torch.distributed.all_gather_object``): send small things, such as the top-k candidates
    of a view, never a dataset.
    """
    if not _distributed(strategy):
        return [obj]
    status_point()  # inside a joined pass: every rank is still in step
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def together(strategy: Any, work: Callable[[], T], owner: str) -> T:
    """Run ``work`` on every rank; when it raises on any rank, every rank raises (no rank trains on alone).

    Call it on every rank. The failing rank raises its own error; the others raise a ``RuntimeError`` quoting the
    first failing rank's. (A rank that stops *inside* a collective of ``work`` is noticed by the process group: gloo
    at once when the peer's connection closes, NCCL at its timeout.)
    """
    error: Exception | None = None
    value: T | None = None
    try:
        value = work()
    except Exception as err:
        error = err
    message = None if error is None else f"{type(error).__name__}: {error}"
    messages = all_gather_objects(strategy, message)
    if error is not None:
        raise error
    for rank, text in enumerate(messages):
        if text is not None:
            raise RuntimeError(f"{owner} failed on global rank {rank}, so every rank stops: {text}")
    return cast(T, value)


def broadcast_from_zero(strategy: Any, read: Callable[[], T], owner: str) -> T:
    """``read()`` on global rank zero, sent to every rank (the probe, so every rank explains the same images).

    Call it on every rank; an error on rank zero is raised on every rank.
    """
    if not _distributed(strategy):
        return read()
    value: Any = None
    message = None
    error: Exception | None = None
    if dist.get_rank() == 0:
        try:
            value = read()
        except Exception as err:
            error, message = err, f"{type(err).__name__}: {err}"
    value, message = strategy.broadcast((value, message), src=0)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"{owner} failed on global rank 0, so every rank stops: {message}")
    return cast(T, value)


def full_tensor(tensor: Tensor) -> Tensor:
    """``tensor`` detached, whole: a parameter sharded by FSDP2 (a ``DTensor``) is gathered from every rank (a
    collective: call it on every rank), any other tensor is returned as it is."""
    with torch.no_grad():
        gather = getattr(tensor, "full_tensor", None)
        if callable(gather):
            status_point()  # inside a joined pass: every rank is still in step
        return (gather() if callable(gather) else tensor).detach()
