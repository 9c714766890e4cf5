"""Shared pieces of the functional core: logits, targets, normalisation, upsampling. No Lightning import."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Targets: TypeAlias = "int | Tensor | Callable[[Tensor], Tensor] | None"
OutputTransform: TypeAlias = "Callable[[Any], Tensor] | None"

_EPS = 1e-12


def logits_from_output(output: Any, output_transform: OutputTransform = None) -> Tensor:
    """Turn a model's output into ``[B, C]`` logits.

    Tensors pass through; objects with a ``.logits`` tensor (Hugging Face ``ModelOutput``) give that. Anything
    else needs ``output_transform``.
    """
    if output_transform is not None:
        output = output_transform(output)
    elif not isinstance(output, Tensor) and isinstance(getattr(output, "logits", None), Tensor):
        output = output.logits
    if not isinstance(output, Tensor) or output.ndim != 2:
        what = f"a tensor of shape {list(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"the model returned {what}; explanations need [B, C] class scores (logits). Pass "
            "output_transform=<callable mapping the model output to [B, C] logits>, e.g. "
            "output_transform=lambda out: out[0] for a model that returns (logits, aux)."
        )
    return output


def class_indices(targets: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """One class index per sample ``[B]`` from an int or a tensor of indices (range checks are the caller's)."""
    if isinstance(targets, int) and not isinstance(targets, bool):
        return torch.full((batch,), targets, dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        index = targets.to(device=device, dtype=torch.long).reshape(-1)
        if index.numel() != batch:
            raise ValueError(f"targets has {index.numel()} class indices for a batch of {batch}: give one per sample.")
        # Indices made under trainer.validate()'s inference mode cannot enter a graph; a copy made here can.
        return index.clone() if index.is_inference() and not torch.is_inference_mode_enabled() else index
    raise TypeError(
        f"targets must be None, an int, a tensor of class indices or a callable; got {type(targets).__name__}."
    )


def target_scores(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Per-sample scores to explain, and the class index per sample (-1 where a callable chose the score).

    ``targets``: None (the predicted class), an int (one class for all), a tensor with one class index per
    sample, or a callable from logits ``[B, C]`` to scores ``[B]``.
    """
    batch, num_classes = logits.shape
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(logits)
        if not isinstance(scores, Tensor) or scores.shape != (batch,):
            got = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"a targets callable must return one score per sample, shape [{batch}]; got {got}.")
        return scores, torch.full((batch,), -1, dtype=torch.long, device=logits.device)
    index = logits.detach().argmax(dim=1) if targets is None else class_indices(targets, batch, logits.device)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_classes):
        raise ValueError(
            f"target class indices must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs; "
            f"got {index.tolist()}."
        )
    return logits.gather(1, index[:, None]).squeeze(1), index


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map (the last two dimensions) to [0, 1]; constant maps become all zeros.

    Never divides by zero. Non-finite values propagate so that callers can detect and report them.
    """
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    safe = torch.where(span > _EPS, span, torch.ones_like(span))
    out = torch.where(span > _EPS, (flat - low) / safe, torch.zeros_like(flat))
    # A span that is NaN fails both comparisons above; keep the NaN visible.
    out = torch.where(torch.isnan(span), span.expand_as(flat), out)
    return out.view_as(maps)


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[B, H, W]`` or ``[B, K, H, W]`` maps to ``size`` (half-pixel centres)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    squeeze = maps.ndim == 3
    x = maps[:, None] if squeeze else maps
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[:, 0] if squeeze else x


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (fp32 when it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_inputs(inputs: Any) -> Tensor:
    """Validate a probe batch: a floating-point ``[B, C, H, W]`` tensor."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a [B, C, H, W] tensor, got {type(inputs).__name__}.")
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be a [B, C, H, W] image batch, got shape {list(inputs.shape)}.")
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs have dtype {inputs.dtype}; gradient maps need floating-point images. Convert them in the "
            "dataset transform (e.g. torchvision.transforms.v2.ToDtype(torch.float32, scale=True)) or pass a "
            "float probe."
        )
    return inputs


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


@dataclass(frozen=True)
class TargetSpec:
    """Resolved targets: a class index per image, or a callable from logits to per-row scores."""

    classes: Tensor | None
    fn: Callable[[Tensor], Tensor] | None = None

    def scores(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Scores of ``logits`` whose row ``r`` belongs to image ``rows[r]``."""
        if self.fn is not None:
            return self.fn(logits)
        assert self.classes is not None
        classes = self.classes[rows].to(logits.device)
        if classes.numel() and int(classes.max()) >= logits.shape[1]:
            raise ValueError(
                f"target class indices must lie in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} "
                f"outputs; got {self.classes.tolist()}."
            )
        return logits.gather(1, classes[:, None]).squeeze(1)


def resolve_targets(
    model: nn.Module, inputs: Tensor, targets: Targets, output_transform: OutputTransform = None
) -> TargetSpec:
    """Turn ``targets`` into a :class:`TargetSpec`; only ``None`` costs a (no-grad) forward, for the predictions.

    Class indices are checked against the model's number of outputs when the first scores are taken.
    """
    if callable(targets) and not isinstance(targets, Tensor):
        return TargetSpec(None, targets)
    if targets is None:
        with torch.inference_mode(False), torch.no_grad(), eager_only():
            logits = logits_from_output(model(inputs.detach().clone().to(model_dtype(model))), output_transform)
        return TargetSpec(logits.argmax(dim=1))
    classes = class_indices(targets, inputs.shape[0], inputs.device)
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError(f"target class indices must be >= 0; got {classes.tolist()}.")
    return TargetSpec(classes)
