"""Turning maps into pictures: denormalise, colour map, overlay, grid, captions.

All tensor work happens on the maps' device; the finished grid crosses to the CPU once, as ``uint8``, and
captions are drawn there with Pillow.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain.output.layout import PAD as _PAD
from lightning_explain.output.layout import GridLayout

__all__ = ["GridLayout", "colorize", "compose_grid", "grid_layout", "overlay", "to_display", "valid_colormap"]

#: Height in pixels of the caption band above each row of a captioned grid.
CAPTION_HEIGHT = 12


@lru_cache(maxsize=16)
def _lut(name: str) -> Tensor:
    import matplotlib

    cmap = matplotlib.colormaps[name]
    values = cmap(torch.linspace(0, 1, 256).numpy())[:, :3]
    return torch.as_tensor(values, dtype=torch.float32)


def valid_colormap(name: str) -> bool:
    """Whether matplotlib knows the colour map ``name``."""
    import matplotlib

    return name in matplotlib.colormaps


def to_display(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Images ``[N, C, H, W]`` as RGB in [0, 1] for display.

    With ``mean``/``std`` the normalisation is undone (``x * std + mean``); without, each image is min-max
    scaled. One channel is repeated to RGB; more than three keep the first three.
    """
    x = images.detach().float()
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = x * s + m
    else:
        flat = x.flatten(1)
        low = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = (flat.amax(dim=1).view(-1, 1, 1, 1) - low).clamp_min(1e-12)
        x = (x - low) / span
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 2:
        x = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x[:, :3]


def colorize(maps: Tensor, colormap: str = "jet") -> Tensor:
    """Maps ``[N, H, W]`` in [0, 1] to RGB ``[N, 3, H, W]`` through a matplotlib colour map."""
    lut = _lut(colormap).to(maps.device)
    index = (torch.nan_to_num(maps.float(), nan=0.0).clamp(0, 1) * 255).round().long()
    return lut[index].permute(0, 3, 1, 2)


def overlay(images: Tensor, maps: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Tensor:
    """Blend coloured maps over display images; a map with a NaN or inf is left out (the image shows plain)."""
    heat = colorize(maps, colormap)
    valid = torch.isfinite(maps.flatten(1)).all(dim=1).view(-1, 1, 1, 1)
    blended = (1 - alpha) * images + alpha * heat
    return torch.where(valid, blended, images)


def _cell_scale(height: int, width: int, cell_size: int) -> tuple[int, int]:
    scale = cell_size / max(height, width)
    if scale >= 1:
        scale = float(max(1, math.floor(scale)))
    return max(1, round(height * scale)), max(1, round(width * scale))


def grid_layout(
    grid_size: Sequence[int], image_size: Sequence[int], cell_size: int, *, captioned: bool = True
) -> GridLayout | None:
    """The layout of a :func:`compose_grid` grid of ``grid_size`` ``(H', W')`` built from images of
    ``image_size`` ``(H, W)`` with ``cell_size``; None when no whole number of rows and columns fits.

    Example:
        >>> layout = grid_layout((2 * (12 + 32 + 2) + 2, 2 * (32 + 2) + 2), (16, 16), cell_size=32)
        >>> layout.rows, layout.columns, layout.row_box(1)
        (2, 2, (48, 0, 92, 70))
    """
    height, width = int(grid_size[0]), int(grid_size[1])
    cell_h, cell_w = _cell_scale(int(image_size[0]), int(image_size[1]), cell_size)
    band = CAPTION_HEIGHT if captioned else 0
    row_h, col_w = band + cell_h + _PAD, cell_w + _PAD
    if (height - _PAD) % row_h or (width - _PAD) % col_w or height <= _PAD or width <= _PAD:
        return None
    return GridLayout((height - _PAD) // row_h, (width - _PAD) // col_w, cell_h, cell_w, band)


def compose_grid(
    columns: Sequence[Tensor],
    captions: Sequence[Sequence[str]] | None = None,
    *,
    cell_size: int = 128,
) -> Tensor:
    """Lay out ``columns`` (each ``[N, 3, H, W]``, one row per image) as one ``uint8`` ``[3, H', W']`` grid.

    Cells are resized so their long side is about ``cell_size`` (small images are enlarged by a whole
    factor with nearest neighbours, large ones shrunk with antialiasing). With ``captions``, each row gets a
    band above its cells and ``captions[row][col]`` is written there, so no text covers the image.
    """
    rows, _, height, width = columns[0].shape
    out_h, out_w = _cell_scale(height, width, cell_size)
    resized = []
    for col in columns:
        if (out_h, out_w) == (height, width):
            resized.append(col)
        elif out_h > height:
            resized.append(F.interpolate(col, size=(out_h, out_w), mode="nearest"))
        else:
            resized.append(F.interpolate(col, size=(out_h, out_w), mode="bilinear", antialias=True))
    band = CAPTION_HEIGHT if captions else 0
    ncols = len(resized)
    cells = torch.stack(resized, dim=1)  # [N, ncols, 3, h, w]
    row_h = band + out_h + _PAD
    grid = torch.ones(3, rows * row_h + _PAD, ncols * (out_w + _PAD) + _PAD, dtype=cells.dtype, device=cells.device)
    for r in range(rows):
        for c in range(ncols):
            top, left = _PAD + r * row_h + band, _PAD + c * (out_w + _PAD)
            grid[:, top : top + out_h, left : left + out_w] = cells[r, c]
    image = (grid.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if captions:
        image = _draw_captions(image, captions, row_h, out_w)
    return image


#: Font sizes tried, largest first, for a caption on one line; :data:`_TWO_LINE_SIZE` for two lines.
_CAPTION_SIZES = (10, 9, 8, 7)
_TWO_LINE_SIZE = 6
#: Abbreviation keeps at least this many characters of a word (``y=square`` -> ``y=sq.``).
_MIN_STEM = 4


@lru_cache(maxsize=8)
def _caption_font(size: int) -> Any:
    """Pillow's default font at ``size`` pixels (its bitmap font, one size only, where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no sizes
        return ImageFont.load_default()


def _fit_caption(draw: Any, text: str, width: int) -> tuple[list[str], int]:
    """The lines and font size that fit ``text`` into ``width`` pixels of a caption band.

    In this order: one line at the largest size of ``_CAPTION_SIZES`` that fits; two lines at
    ``_TWO_LINE_SIZE`` (split at the space that balances them best); one line at the smallest size with the
    longest words abbreviated (``y=square`` -> ``y=squ.``), and cut at the end when even that is too long.
    """

    def length(line: str, size: int) -> float:
        return float(draw.textlength(line, font=_caption_font(size)))

    for size in _CAPTION_SIZES:
        if length(text, size) <= width:
            return [text], size
    words = text.split(" ")
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    fitting = [
        (first, second)
        for first, second in splits
        if max(length(first, _TWO_LINE_SIZE), length(second, _TWO_LINE_SIZE)) <= width
        and _ink_height(first, _TWO_LINE_SIZE) + _ink_height(second, _TWO_LINE_SIZE) <= CAPTION_HEIGHT
    ]
    if fitting:
        best = min(fitting, key=lambda pair: abs(length(pair[0], _TWO_LINE_SIZE) - length(pair[1], _TWO_LINE_SIZE)))
        return list(best), _TWO_LINE_SIZE
    size = _CAPTION_SIZES[-1]
    while length(" ".join(words), size) > width:
        longest = max(range(len(words)), key=lambda i: len(words[i].rstrip(".")))
        stem = words[longest].rstrip(".")
        if len(stem) <= _MIN_STEM:
            break
        words[longest] = stem[:-1] + "."
    line = " ".join(words)
    while line and length(line, size) > width:
        line = line[:-1]
    return [line], size


def _ascent(size: int) -> int:
    """Pixels from the top of a line to its baseline at ``size`` (0 for a font without metrics)."""
    font = _caption_font(size)
    return int(font.getmetrics()[0]) if hasattr(font, "getmetrics") else 0


def _ink_height(line: str, size: int) -> int:
    """Rows of ink of ``line`` at ``size``."""
    _, top, _, bottom = _caption_font(size).getbbox(line)
    return int(bottom - top)


def _one_line(text: str) -> str:
    """``text`` with line breaks, tabs and other control characters as spaces: a caption is one line of text in its
    band, whatever a dataset's class names hold (Pillow cannot measure text with a line break in it)."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def _draw_captions(image: Tensor, captions: Sequence[Sequence[str]], row_h: int, cell_w: int) -> Tensor:
    """Write each caption into its cell's band, shrunk, wrapped or abbreviated so that it stays in the cell."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    for r, row in enumerate(captions):
        for c, text in enumerate(map(_one_line, row)):
            if not text:
                continue
            x, top = _PAD + c * (cell_w + _PAD) + 1, _PAD + r * row_h
            lines, size = _fit_caption(draw, text, cell_w - 2)
            font = _caption_font(size)
            if len(lines) == 1:  # on the baseline of the largest size, whatever the size
                baseline_shift = _ascent(_CAPTION_SIZES[0]) - _ascent(size)
                draw.text((x, top + baseline_shift), lines[0], fill=(0, 0, 0), font=font)
                continue
            first, second = lines  # the first's ink from the band's top, the second's down to its bottom
            draw.text((x, top - font.getbbox(first)[1]), first, fill=(0, 0, 0), font=font)
            draw.text((x, top + CAPTION_HEIGHT - font.getbbox(second)[3]), second, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def nonfinite_rows(maps: Tensor) -> list[int]:
    """Indices of the images whose map holds a NaN or inf."""
    return torch.nonzero(~torch.isfinite(maps.flatten(1)).all(dim=1)).flatten().tolist()


def explanation_grid(
    display: Tensor,
    maps: Tensor,
    row_captions: Sequence[str],
    *,
    column_captions: Sequence[Sequence[str]] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    cell_size: int = 128,
) -> Tensor:
    """One grid for one method: a row per image, ``input | overlay`` (or ``input | k overlays``).

    Args:
        display: display images ``[N, 3, H, W]`` in [0, 1] (see :func:`to_display`).
        maps: ``[N, H, W]`` or ``[N, k, H, W]`` in [0, 1]; a map with NaN/inf is shown blank.
        row_captions: text on each row's input cell (e.g. label and prediction).
        column_captions: text on each overlay cell, ``[N][k]``.
    """
    stacked = maps[:, None] if maps.ndim == 3 else maps
    columns = [display] + [overlay(display, stacked[:, j], alpha, colormap) for j in range(stacked.shape[1])]
    captions = [
        [row_captions[i], *(column_captions[i] if column_captions else [""] * stacked.shape[1])]
        for i in range(display.shape[0])
    ]
    return compose_grid(columns, captions, cell_size=cell_size)
