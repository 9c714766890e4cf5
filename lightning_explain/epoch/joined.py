"""A failure on one rank inside a pass that every rank joins (FSDP2): every rank learns of it within seconds.

Under FSDP2 every rank runs each probe pass, and every unit of the model all-gathers its parameters from every rank
(in the forward, and again in the backward of ``autograd.grad``). A rank whose pass raises (out of memory in the
probe forward, say) cannot replay the collectives it skipped: its peers would wait in their next all-gather until
the process-group timeout (30 minutes by default), or, worse, match it against an unrelated collective of the rank
that went on. :func:`run_joined` makes the ranks agree at points that a failing rank can reach too:

- a *status check* (one all-reduce of three integers) before each FSDP unit's forward (a forward pre-hook
  registered with ``prepend=True``, so it runs before FSDP2's own all-gather), before each unit's backward (a hook
  on the unit's output, registered before FSDP2's pre-backward hook), before the package's own collectives inside
  a pass (:func:`status_point`, called by :func:`~lightning_explain.epoch.distributed.all_gather_objects` and
  :func:`~lightning_explain.epoch.distributed.full_tensor`), and once at the end of the work;
- each check sends a flag (this rank failed) and the code of the point (which unit, forward or backward, or the
  end): a flag from any rank, or ranks at different points (a rank that failed and went on), ends the work on
  every rank at that same check, with :class:`PeerFailed` on the ranks that did not fail (a ``BaseException``,
  so that the views' own ``except Exception`` guards let it through);
- a rank knows it failed when an FSDP unit's forward raised (a forward hook with ``always_call=True``), when a
  backward it started never finished, or when the work itself raised;
- once a failure is known, FSDP2's per-iteration state is reset (``FSDPModule.reset_iter_state``: every unit
  resharded, the training states back to idle) and the ranks exchange the cause (one ``all_gather_object``).

Cost: one tiny all-reduce per FSDP unit per forward and per backward of a probe pass, and one at the end.
Limit: a failure *inside* one of FSDP2's own collectives (an all-gather that runs out of memory while allocating)
leaves the peers inside that collective; the process group notices it (gloo when the connection closes, NCCL at
its timeout).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_explain.functional.perturbation import plain_inputs

__all__ = ["JoinedFailure", "PeerFailed", "run_joined", "status_point"]

#: Codes of the status points that are not a unit's forward or backward.
_END, _GATHER = 1, 2


def _is_backward(code: int) -> bool:
    return code >= 10 and code % 2 == 1


class PeerFailed(BaseException):
    """Ends a joined pass on a rank whose peers failed (or went out of step). Caught by :func:`run_joined` only:
    deriving from ``BaseException``, it passes through the views' ``except Exception`` guards."""


@dataclass
class JoinedFailure:
    """What every rank knows after a joined pass failed: the first failing rank, its error's text, and this rank's
    own error (None on a rank that did not fail)."""

    rank: int
    message: str
    error: Exception | None


class _Status:
    """The status checks of one joined run, on this rank."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.failed: BaseException | None = None  # this rank's own failure
        self.known = False  # a status check has told every rank that the work failed
        self.in_backward = False  # a backward with status points began and has not finished

    def check(self, code: int) -> None:
        if self.known:
            raise PeerFailed
        # outside a backward (forward, gathers, the end), a backward that began and never finished is a failure
        unfinished = self.in_backward and not _is_backward(code)
        if unfinished and self.failed is None:  # the backward's error, when a retry runs inside its except clause
            handled = sys.exc_info()[1]
            self.failed = handled if isinstance(handled, Exception) else RuntimeError("a probe backward stopped early")
        flag = int(self.failed is not None or unfinished)
        status = torch.tensor([flag, code, -code], dtype=torch.int64, device=self.device)
        dist.all_reduce(status, op=dist.ReduceOp.MAX)
        if int(status[0]) or int(status[1]) != -int(status[2]):
            self.known = True
            raise PeerFailed

    def _backward_started(self) -> None:
        if not self.in_backward:
            self.in_backward = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        self.in_backward = False

    def hook(self, model: nn.Module) -> list[Any]:
        """Status hooks on every FSDP2 unit of ``model``; returns the handles."""
        handles = []
        units = [m for m in model.modules() if hasattr(m, "_get_fsdp_state")]
        for index, unit in enumerate(units):
            forward, backward = 10 + 2 * index, 11 + 2 * index

            def before(_module: nn.Module, _args: Any, code: int = forward) -> None:
                self.check(code)

            def after(_module: nn.Module, _args: Any, output: Any, code: int = backward) -> None:
                error = sys.exc_info()[1]
                if output is None and isinstance(error, Exception):  # the unit's forward raised (always_call)
                    self.failed = self.failed or error
                    return
                if torch.is_grad_enabled():
                    for tensor in _tensors(output):
                        if tensor.requires_grad:
                            tensor.register_hook(lambda grad, c=code: self._on_grad(grad, c))

            handles.append(unit.register_forward_pre_hook(before, prepend=True))
            handles.append(unit.register_forward_hook(after, prepend=True, always_call=True))
        return handles

    def _on_grad(self, grad: Tensor, code: int) -> Tensor:
        self._backward_started()
        self.check(code)
        return grad


def _tensors(output: Any) -> Iterator[Tensor]:
    if isinstance(output, Tensor):
        yield output
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item)


#: The status checks of the joined run in progress on this rank (None outside :func:`run_joined`).
_current: _Status | None = None


def status_point() -> None:
    """A status check before one of the package's own collectives, when a joined run is in progress (else nothing).

    Call it on every rank, right before the collective."""
    if _current is not None:
        _current.check(_GATHER)


@contextmanager
def _active(status: _Status) -> Iterator[None]:
    global _current
    previous, _current = _current, status
    try:
        yield
    finally:
        _current = previous


def _reset_fsdp(model: nn.Module) -> None:
    """Put FSDP2's per-iteration state back as before the pass (every unit resharded, every state idle)."""
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)
        reset = getattr(module, "reset_iter_state", None)
        if get_state is not None and callable(reset) and get_state()._is_root:
            reset()


def run_joined(model: nn.Module, device: torch.device, work: Callable[[], None]) -> JoinedFailure | None:
    """Run ``work`` (one view's passes) on every rank of the default process group, with status checks.

    Call it on every rank. Returns None on every rank when ``work`` finished everywhere; else the same
    :class:`JoinedFailure` on every rank (the first failing rank's cause), with ``model``'s FSDP2 state reset, so the
    next training step all-gathers as if the pass had never run. The module hooks are removed in ``finally``.
    """
    status = _Status(device)
    handles = status.hook(model)
    try:
        with _active(status), plain_inputs():  # no forward that raises on purpose: it would read as a failure
            try:
                work()
            except PeerFailed:
                pass
            except Exception as err:
                status.failed = status.failed or err
            if not status.known:
                with suppress(PeerFailed):
                    status.check(_END)
    finally:
        for handle in handles:
            handle.remove()
    if not status.known:
        return None
    _reset_fsdp(model)
    own = status.failed
    message = None if own is None else f"{type(own).__name__}: {own}"
    messages: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    rank = next((r for r, text in enumerate(messages) if text is not None), -1)
    text = messages[rank] if rank >= 0 else "the ranks' probe passes went out of step (a rank failed and went on)"
    return JoinedFailure(rank, str(text), own if isinstance(own, Exception) else None)
