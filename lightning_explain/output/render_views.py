"""Grids of the extra views: convolution filters (:class:`~lightning_explain.FilterGrid`) and channel maps
(:class:`~lightning_explain.FeatureMaps`), built with :func:`~lightning_explain.output.render.compose_grid`."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain.output.render import colorize, compose_grid

__all__ = ["feature_map_grid", "filter_grid"]


def filter_grid(
    weight: Tensor, *, columns: int = 8, scale: Literal["layer", "filter"] = "layer", cell_size: int = 32
) -> Tensor:
    """Conv weights ``[O, I, kh, kw]`` (``I`` in {1, 3}) as one ``uint8`` ``[3, H, W]`` grid, ``columns`` filters a row.

    ``scale="layer"`` maps the layer's smallest weight to black and its largest to white (filters comparable);
    ``"filter"`` min-max scales each filter on its own. One input channel is shown in grey.

    Example:
        >>> filter_grid(torch.randn(6, 3, 3, 3), columns=4, cell_size=3).shape
        torch.Size([3, 12, 22])
    """
    if weight.ndim != 4 or weight.shape[1] not in (1, 3):
        raise ValueError(f"filter_grid needs conv weights [O, 1 or 3, kh, kw]; got {list(weight.shape)}.")
    w = weight.detach().float()
    dims = (1, 2, 3) if scale == "filter" else (0, 1, 2, 3)
    low = w.amin(dim=dims, keepdim=True)
    span = w.amax(dim=dims, keepdim=True) - low
    w = torch.where(span > 0, (w - low) / span.clamp_min(1e-12), torch.full_like(w, 0.5))
    if w.shape[1] == 1:
        w = w.expand(-1, 3, -1, -1)
    count = w.shape[0]
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    blank = torch.ones(rows * columns - count, *w.shape[1:], device=w.device)
    cells = torch.cat([w, blank]).view(rows, columns, *w.shape[1:])
    return compose_grid([cells[:, c] for c in range(columns)], cell_size=cell_size)


def feature_map_grid(display: Tensor, maps: Tensor, *, colormap: str = "viridis", cell_size: int = 64) -> Tensor:
    """A row per image: ``input | channel 0 ... k-1``, each map ``[N, k, h, w]`` in [0, 1] coloured and enlarged
    with nearest neighbours to the input size (so the layer's resolution stays visible).

    Example:
        >>> feature_map_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 2, 2), cell_size=8).shape
        torch.Size([3, 46, 42])
    """
    big = F.interpolate(maps, size=tuple(display.shape[-2:]), mode="nearest")
    columns = [display] + [colorize(big[:, j], colormap) for j in range(big.shape[1])]
    captions = [[f"#{i}"] + [f"ch {j}" for j in range(big.shape[1])] for i in range(display.shape[0])]
    return compose_grid(columns, captions, cell_size=cell_size)
