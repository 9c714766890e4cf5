"""How a pass runs: gradients on, inference mode, autocast and ``torch.compile`` off, the model's dtype, and the
checks on the images that go in. No Lightning import."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["as_model_input", "autocast_off", "check_inputs", "eager_only", "grad_context", "model_dtype"]


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (fp32 when it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_inputs(inputs: Any, *, integer_ok: bool = False) -> Tensor:
    """Validate a probe batch: a floating-point ``[B, C, H, W]`` tensor (with ``integer_ok``, also an integer one,
    for a model that converts its own ``uint8`` images)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a [B, C, H, W] tensor, got {type(inputs).__name__}.")
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be a [B, C, H, W] image batch, got shape {list(inputs.shape)}.")
    if integer_ok and not inputs.is_floating_point() and not inputs.is_complex() and inputs.dtype != torch.bool:
        return inputs
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs have dtype {inputs.dtype}; gradient maps need floating-point images. Convert them in the "
            "dataset transform (e.g. torchvision.transforms.v2.ToDtype(torch.float32, scale=True)) or pass a "
            "float probe."
        )
    return inputs


def as_model_input(inputs: Tensor, model: nn.Module) -> Tensor:
    """A detached copy of ``inputs`` for ``model``: floating-point images in the model's dtype, integer images as
    they are (a model that takes ``uint8`` converts them itself). Copied, so that tensors made under inference mode
    can enter a graph."""
    x = inputs.detach().clone()
    return x.to(model_dtype(model)) if x.is_floating_point() else x


def autocast_off(device: torch.device) -> AbstractContextManager[Any]:
    """Autocast disabled on ``device`` (maps are computed in the model's own dtype, fp32 for mixed precision)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def eager_only() -> AbstractContextManager[Any]:
    """Run ``torch.compile``d models and modules eagerly (their original Python code) inside the block.

    Inside a compiled graph, forward hooks are traced in and the gradient with respect to a hooked layer's
    output comes out wrong (all-zero Grad-CAM with ``aot_eager``/``inductor``); eagerly, hooks and
    ``autograd.grad`` behave as for any module, and no recompilation is triggered. Needs torch >= 2.6
    (``torch.compiler.set_stance``); older versions run unchanged.
    """
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


@contextmanager
def grad_context(device: torch.device) -> Iterator[None]:
    """Gradients on, inference mode, autocast and ``torch.compile`` off: maps are computed eagerly in fp32."""
    with torch.inference_mode(False), torch.enable_grad(), autocast_off(device), eager_only():
        yield
