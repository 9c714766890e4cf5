"""Methods that perturb the input and look at the score: Score-CAM and Occlusion.

Both run batched, without gradients (``torch.inference_mode``), in chunks of at most ``batch_size`` perturbed
images, so memory stays bounded whatever the number of channels or windows.

- Score-CAM (Wang et al. 2020): each channel of the layer, upsampled to the input (bilinear, corners aligned)
  and min-max normalised, masks the input; the target logit of each masked input, softmaxed over the
  channels, weights the channels: ``ReLU(sum_k softmax(s)_k A_k)``. Channels whose map is constant give the
  same all-zero mask, so that forward is run once and shared (same output, fewer passes).
- Occlusion (Zeiler & Fergus 2014): a ``window`` slides over the image with ``stride`` (windows at the edge
  are clipped), is replaced by ``baseline``, and every pixel gets the mean drop of the target score over the
  windows that cover it (0 where none does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain.functional._common import OutputTransform, TargetSpec, logits_from_output, model_dtype

__all__ = ["occlusion_map", "score_cam_map"]


def _forward_scores(
    model: nn.Module, batch: Tensor, spec: TargetSpec, rows: Tensor, output_transform: OutputTransform
) -> Tensor:
    return spec.scores(logits_from_output(model(batch), output_transform).float(), rows)


def score_cam_map(
    model: nn.Module,
    inputs: Tensor,
    activations: Tensor,
    spec: TargetSpec,
    *,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Score-CAM at the layer's resolution ``[B, h, w]`` from the layer's ``activations`` ``[B, K, h, w]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    batch, channels = activations.shape[:2]
    size = tuple(inputs.shape[-2:])
    dtype = model_dtype(model)
    weights = torch.empty(batch, channels, device=activations.device)
    with torch.inference_mode():
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
                scores[chunk] = _forward_scores(model, masked, spec, rows[: chunk.numel()], output_transform)
            if constant.any():
                scores[constant] = _forward_scores(model, image * 0, spec, rows[:1], output_transform)
            weights[b] = torch.softmax(scores, dim=0)
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
) -> Tensor:
    """Occlusion attribution ``[B, H, W]``: the mean score drop when a window over the pixel is occluded."""
    if min(*window, *stride, batch_size) < 1:
        raise ValueError(f"window, stride and batch_size must be >= 1; got {window}, {stride}, {batch_size}.")
    batch, _, height, width = inputs.shape
    dtype = model_dtype(model)
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
    with torch.inference_mode():
        for b in range(batch):
            image = inputs[b : b + 1].to(dtype)
            rows = torch.full((batch_size,), b, dtype=torch.long, device=inputs.device)
            reference = _forward_scores(model, image, spec, rows[:1], output_transform)
            total = torch.zeros(height, width, device=inputs.device)
            for start in range(0, len(boxes), batch_size):
                masks = cover[start : start + batch_size, None].to(dtype)
                occluded = image * (1 - masks) + baseline * masks
                drops = reference - _forward_scores(model, occluded, spec, rows[: masks.shape[0]], output_transform)
                total += torch.einsum("n,nhw->hw", drops, cover[start : start + batch_size])
            out[b] = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return out
