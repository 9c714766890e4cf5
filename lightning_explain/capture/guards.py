"""The guard that makes a probe pass invisible to training.

The model's per-module train/eval flags, ``requires_grad`` flags, ``.grad`` tensors and the global random number
generators are restored in ``finally``, also when the pass raises.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["preserve_model_state", "preserve_rng"]


@dataclass
class _RngState:
    torch_cpu: Tensor
    torch_cuda: list[Tensor] | None
    numpy: Any
    python: Any


def _get_rng() -> _RngState:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return _RngState(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())


def _set_rng(state: _RngState) -> None:
    torch.set_rng_state(state.torch_cpu)
    if state.torch_cuda is not None:
        torch.cuda.set_rng_state_all(state.torch_cuda)
    np.random.set_state(state.numpy)
    random.setstate(state.python)


@contextmanager
def preserve_rng() -> Iterator[None]:
    """Restore the torch (CPU and CUDA), numpy and Python random states on exit."""
    state = _get_rng()
    try:
        yield
    finally:
        _set_rng(state)


@contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a probe pass; restore everything a pass could touch on exit.

    Restored in ``finally``: every module's ``training`` flag (per module, so submodules a user froze in
    eval stay in eval), every parameter's ``requires_grad`` and ``.grad`` (the same tensor object), and the
    global RNG states. Eval mode means BatchNorm running statistics are read, never updated.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    rng = _get_rng()
    try:
        model.eval()
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for p, req, grad in zip(params, requires, grads, strict=True):
            if p.requires_grad != req:
                p.requires_grad_(req)
            if p.grad is not grad:
                p.grad = grad
        _set_rng(rng)
