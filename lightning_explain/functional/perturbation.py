"""Methods that perturb the input and look at the score: Score-CAM and Occlusion.

Both run batched, without gradients (``torch.inference_mode``), in chunks of at most ``batch_size`` perturbed
images, so memory stays bounded whatever the number of channels or windows. The perturbed images are passed in
``channels_last`` memory format, which CPU convolutions run faster (the logits agree with the contiguous pass to
float rounding, ~1e-6); a model that cannot take that layout (a ``.view`` on the input, say) is detected on the
first chunk and gets contiguous images from then on. ``precision="bf16"`` is an opt-in that runs those passes
under bfloat16 autocast: about twice as fast again on CPUs with bf16 support, with maps that move by ~1e-3.

- Score-CAM (Wang et al. 2020): each channel of the layer, upsampled to the input (bilinear, corners aligned)
  and min-max normalised, masks the input; the target logit of each masked input, softmaxed over the
  channels, weights the channels: ``ReLU(sum_k softmax(s)_k A_k)``. Channels whose map is constant give the
  same all-zero mask, so that forward is run once and shared (same output, fewer passes).
- Occlusion (Zeiler & Fergus 2014): a ``window`` slides over the image with ``stride`` (windows at the edge
  are clipped), is replaced by ``baseline``, and every pixel gets the mean drop of the target score over the
  windows that cover it (0 where none does).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain.functional.context import model_dtype
from lightning_explain.functional.progress import task
from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.targets import OutputTransform, TargetSpec, logits_from_output

__all__ = ["PRECISIONS", "SPECS", "Precision", "occlusion_map", "score_cam_map"]

Precision = Literal["fp32", "bf16"]
#: The precisions the perturbed forward passes can run in.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


class _PerturbedForward:
    """Target scores of batches of perturbed images: ``channels_last`` when the model takes it, optional bf16."""

    def __init__(
        self, model: nn.Module, spec: TargetSpec, output_transform: OutputTransform, precision: Precision
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
        self.model = model
        self.spec = spec
        self.output_transform = output_transform
        self.bf16 = precision == "bf16"
        self.channels_last: bool | None = None  # decided on the first batch

    def _scores(self, batch: Tensor, rows: Tensor) -> Tensor:
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(batch)
        return self.spec.scores(logits_from_output(out, self.output_transform).float(), rows)

    def __call__(self, batch: Tensor, rows: Tensor) -> Tensor:
        if batch.dim() != 4 or self.channels_last is False or (self.channels_last is None and _PLAIN_INPUTS.get()):
            return self._scores(batch, rows)
        fast = batch.contiguous(memory_format=torch.channels_last)
        if self.channels_last:
            return self._scores(fast, rows)
        try:
            scores = self._scores(fast, rows)
        except RuntimeError:  # the model cannot take channels_last (a .view on its input): contiguous from now on
            self.channels_last = False
            return self._scores(batch, rows)
        self.channels_last = True
        return scores


#: True inside :func:`plain_inputs`: no channels_last try (a forward that may raise on purpose).
_PLAIN_INPUTS: contextvars.ContextVar[bool] = contextvars.ContextVar("plain_inputs", default=False)


@contextmanager
def plain_inputs() -> Iterator[None]:
    """Perturbation methods feed contiguous inputs only, without first trying ``channels_last`` (a try that raises
    and is caught when the model cannot take it). Used by joined FSDP2 passes, where a forward that raises on one rank
    counts as that rank failing (:mod:`lightning_explain.epoch.joined`)."""
    token = _PLAIN_INPUTS.set(True)
    try:
        yield
    finally:
        _PLAIN_INPUTS.reset(token)


def score_cam_map(
    model: nn.Module,
    inputs: Tensor,
    activations: Tensor,
    spec: TargetSpec,
    *,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    precision: Precision = "fp32",
) -> Tensor:
    """Score-CAM at the layer's resolution ``[B, h, w]`` from the layer's ``activations`` ``[B, K, h, w]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    batch, channels = activations.shape[:2]
    size = tuple(inputs.shape[-2:])
    dtype = model_dtype(model)
    forward = _PerturbedForward(model, spec, output_transform, precision)
    weights = torch.empty(batch, channels, device=activations.device)
    with torch.inference_mode(), task("scorecam", total=batch) as bar:
        for b in range(batch):
            up = F.interpolate(activations[b : b + 1].float(), size=size, mode="bilinear", align_corners=True)[0]
            low = up.flatten(1).amin(1)[:, None, None]
            high = up.flatten(1).amax(1)[:, None, None]
            masks = (up - low) / (high - low + 1e-8)
            constant = (high - low).flatten() <= 0
            live = torch.nonzero(~constant).flatten()
            scores = torch.empty(channels, device=activations.device)
            image = inputs[b : b + 1].to(dtype)
            rows = torch.full((batch_size,), b, dtype=torch.long, device=inputs.device)
            for start in range(0, live.numel(), batch_size):
                chunk = live[start : start + batch_size]
                masked = image * masks[chunk, None].to(dtype)
                scores[chunk] = forward(masked, rows[: chunk.numel()])
            if constant.any():
                scores[constant] = forward(image * 0, rows[:1])
            weights[b] = torch.softmax(scores, dim=0)
            bar.update()
    return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations.float()))


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    count = math.ceil(max(length - window, 0) / stride) + 1
    return [i * stride for i in range(count)]


def occlusion_map(
    model: nn.Module,
    inputs: Tensor,
    spec: TargetSpec,
    *,
    window: tuple[int, int] = (16, 16),
    stride: tuple[int, int] = (8, 8),
    baseline: float = 0.0,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    precision: Precision = "fp32",
) -> Tensor:
    """Occlusion attribution ``[B, H, W]``: the mean score drop when a window over the pixel is occluded."""
    if min(*window, *stride, batch_size) < 1:
        raise ValueError(f"window, stride and batch_size must be >= 1; got {window}, {stride}, {batch_size}.")
    batch, _, height, width = inputs.shape
    dtype = model_dtype(model)
    forward = _PerturbedForward(model, spec, output_transform, precision)
    boxes = [
        (top, left)
        for top in _window_starts(height, window[0], stride[0])
        for left in _window_starts(width, window[1], stride[1])
    ]
    cover = torch.zeros(len(boxes), height, width, device=inputs.device)
    for i, (top, left) in enumerate(boxes):
        cover[i, top : top + window[0], left : left + window[1]] = 1.0
    count = cover.sum(dim=0)
    out = torch.zeros(batch, height, width, device=inputs.device)
    with torch.inference_mode(), task("occlusion", total=batch) as bar:
        for b in range(batch):
            image = inputs[b : b + 1].to(dtype)
            rows = torch.full((batch_size,), b, dtype=torch.long, device=inputs.device)
            reference = forward(image, rows[:1])
            total = torch.zeros(height, width, device=inputs.device)
            for start in range(0, len(boxes), batch_size):
                masks = cover[start : start + batch_size, None].to(dtype)
                occluded = image * (1 - masks) + baseline * masks
                drops = reference - forward(occluded, rows[: masks.shape[0]])
                total += torch.einsum("n,nhw->hw", drops, cover[start : start + batch_size])
            out[b] = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
            bar.update()
    return out


def _score_cam(ctx: MethodContext, **options: Any) -> Tensor:
    return score_cam_map(
        ctx.model, ctx.inputs, ctx.activation, ctx.target, output_transform=ctx.output_transform, **options
    )


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def _occlusion(ctx: MethodContext, **options: Any) -> Tensor:
    for key in ("window", "stride"):  # an int (from a YAML config, say) is a square
        if key in options:
            options[key] = _pair(options[key])
    return occlusion_map(ctx.model, ctx.inputs, ctx.target, output_transform=ctx.output_transform, **options)


#: Score-CAM (at the layer's resolution, from the shared pass's layer output) and Occlusion (the positive part).
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "scorecam",
        _score_cam,
        reads=frozenset({"layer"}),
        own_passes=True,
        at_layer=True,
        options_from=score_cam_map,
        function="score_cam",
    ),
    MethodSpec(
        "occlusion", _occlusion, own_passes=True, post=torch.relu, options_from=occlusion_map, function="occlusion"
    ),
)
