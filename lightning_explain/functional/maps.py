"""Maps after the pass: resize to the image and min-max normalise. No Lightning import."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["normalize_maps", "upsample_maps"]

_EPS = 1e-12


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
