"""Rendering: display, colour maps, overlays, grids and captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_explain.output.render import (
    CAPTION_HEIGHT,
    colorize,
    compose_grid,
    explanation_grid,
    overlay,
    to_display,
)


def test_to_display_undoes_normalisation_and_handles_channels():
    raw = torch.rand(2, 3, 4, 4)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    normed = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(to_display(normed, mean, std), raw)
    gray = to_display(torch.rand(2, 1, 4, 4))
    assert gray.shape == (2, 3, 4, 4) and torch.equal(gray[:, 0], gray[:, 2])
    assert to_display(torch.rand(2, 4, 4, 4)).shape == (2, 3, 4, 4)
    scaled = to_display(torch.rand(1, 3, 4, 4) * 50 - 20)
    assert scaled.min() == 0 and scaled.max() == 1


def test_colorize_uses_the_matplotlib_colour_map():
    import matplotlib

    maps = torch.tensor([[[0.0, 1.0]]])
    rgb = colorize(maps, "viridis")
    expected = torch.tensor(matplotlib.colormaps["viridis"]([0.0, 1.0])[:, :3], dtype=torch.float32)
    torch.testing.assert_close(rgb[0, :, 0, :].T, expected)


def test_overlay_leaves_non_finite_maps_blank():
    images = torch.rand(2, 3, 4, 4)
    maps = torch.rand(2, 4, 4)
    maps[1, 2, 2] = float("inf")
    out = overlay(images, maps, alpha=0.5)
    assert torch.equal(out[1], images[1])
    assert not torch.equal(out[0], images[0])


def test_compose_grid_layout_scaling_and_captions():
    cols = [torch.zeros(3, 3, 16, 16), torch.ones(3, 3, 16, 16)]
    plain = compose_grid(cols, cell_size=64)
    assert plain.dtype == torch.uint8 and plain.shape == (3, 3 * 66 + 2, 2 * 66 + 2)
    big = compose_grid([torch.zeros(1, 3, 224, 224)], cell_size=128)
    assert big.shape == (3, 132, 132)
    captioned = compose_grid(cols, [["#0 y=1 p=2", ""], ["", ""], ["", ""]], cell_size=64)
    band = CAPTION_HEIGHT
    assert captioned.shape == (3, 3 * (band + 66) + 2, 2 * 66 + 2)
    assert (captioned[:, 2 : 2 + band, 2:66] < 100).any()  # dark text in the band of row 0, column 0
    assert (captioned[:, 2 : 2 + band, 68:] == 255).all()  # no text over column 1
    first_cell = captioned[:, 2 + band : 2 + band + 64, 2:66]
    assert torch.equal(first_cell, plain[:, 2:66, 2:66])  # the text covers no pixel of the image


def _ink(pixels: np.ndarray) -> np.ndarray:
    """The smallest box around the non-white pixels of an ``H x W x 3`` array."""
    rows, cols = np.nonzero((pixels < 255).any(axis=2))
    assert rows.size, "no ink"
    return pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _text_alone(text: str, size: int) -> np.ndarray:
    """``text`` in black on white with Pillow's default font at ``size``, cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (400, 40), "white")
    ImageDraw.Draw(image).text((5, 5), text, fill=(0, 0, 0), font=ImageFont.load_default(size=size))
    return _ink(np.asarray(image))


def _captioned_cell(text: str, side: int, cell_size: int) -> tuple[np.ndarray, int]:
    """A white two-column grid with ``text`` on the first cell; ``(H x W x 3 pixels, cell width)``."""
    grid = compose_grid([torch.ones(1, 3, side, side)] * 2, [[text, ""]], cell_size=cell_size)
    return grid.permute(1, 2, 0).numpy(), (grid.shape[2] - 6) // 2


def _outside_the_band(pixels: np.ndarray, cell: int) -> np.ndarray:
    """Every pixel but the first cell's caption band (top-left at (2, 2), ``cell`` wide, CAPTION_HEIGHT high)."""
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[2 : 2 + CAPTION_HEIGHT, 2 : 2 + cell] = False
    return pixels[outside]


def test_a_caption_longer_than_its_cell_is_drawn_whole_inside_the_cell():
    text = "#0 y=square p=square"  # the docs picture's caption: 103 px at the default 10 px font
    pixels, cell = _captioned_cell(text, 48, 128)
    assert cell == 96
    assert (_outside_the_band(pixels, cell) == 255).all()  # no text pixel beyond the cell's band
    drawn = _ink(pixels[2 : 2 + CAPTION_HEIGHT, 2 : 2 + cell])
    # The whole label, at a smaller size of the same font (today's code cut it to "p=squa").
    assert any(np.array_equal(drawn, _text_alone(text, size)) for size in range(6, 10))
    # In a cell wide enough, the same caption keeps the default size.
    wide, wide_cell = _captioned_cell(text, 64, 128)
    assert wide_cell == 128 and np.array_equal(
        _ink(wide[2 : 2 + CAPTION_HEIGHT, 2 : 2 + wide_cell]), _text_alone(text, 10)
    )


@pytest.mark.parametrize("side", [16, 32, 48])
@pytest.mark.parametrize(
    "text",
    ["#0 y=square p=square", "#12 y=triangle p=pentagon", "#3 y=a_very_long_class_name p=another_long_one", "x" * 80],
)
def test_a_caption_never_leaves_its_cell(text, side):
    pixels, cell = _captioned_cell(text, side, 2 * side)
    assert (_outside_the_band(pixels, cell) == 255).all()
    assert (pixels[2 : 2 + CAPTION_HEIGHT, 2 : 2 + cell] < 100).any()  # something is written


def test_explanation_grid_has_one_column_per_channel():
    grid = explanation_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["a", "b"], cell_size=32)
    assert grid.shape == (3, 2 * (CAPTION_HEIGHT + 34) + 2, 4 * 34 + 2)
