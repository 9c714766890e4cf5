"""Captions made from users' class names: markup, TeX, line breaks, control characters, 300 characters, nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_explain.output.render import CAPTION_HEIGHT, compose_grid

#: Class names as folder names can spell them (ImageFolder takes any directory name).
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "$\\frac{",  # unbalanced TeX: a mathtext renderer would raise on it
    "line\nbreak",
    "tab\there\r\nand\x00nul\x1b[31m",
    "para\u2029graph\u2028line",
    "w" * 300,
    " ".join(["word"] * 75),
    "ünïcödé 中文 🙂",
]


def _grid(text: str) -> np.ndarray:
    grid = compose_grid([torch.ones(1, 3, 16, 16)] * 2, [[f"#0 y={text} p={text}", ""]], cell_size=32)
    return grid.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_any_class_name_draws_one_line_inside_its_own_cell(name):
    pixels = _grid(name)  # raised ValueError ("can't measure length of multiline text") for a line break
    cell = (pixels.shape[1] - 6) // 2
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[2 : 2 + CAPTION_HEIGHT, 2 : 2 + cell] = False
    assert (pixels[outside] == 255).all()  # nothing beyond the first cell's caption band
    assert (pixels[2 : 2 + CAPTION_HEIGHT, 2 : 2 + cell] < 100).any()  # something is written


def test_line_breaks_and_control_characters_are_drawn_as_spaces():
    assert np.array_equal(_grid("line\nbreak"), _grid("line break"))
    assert np.array_equal(_grid("a\r\nb\tc\x00d\u2028e"), _grid("a  b c d e"))


def test_an_empty_class_name_still_draws_the_rest_of_the_caption():
    assert (_grid("")[2 : 2 + CAPTION_HEIGHT] < 100).any()


def test_the_console_line_about_the_probe_quotes_names_with_line_breaks_or_escape_codes():
    from lightning_explain.epoch.probe import describe_classes

    line, missing = describe_classes(torch.tensor([0, 1, 2, 2]), ["two\nlines", "\x1b[2Jclear", "", "ok"])
    assert line == "4 images: 'two\\nlines' x1, '\\x1b[2Jclear' x1, '' x2"
    assert "\n" not in line and "\x1b" not in line
    assert missing == "no probe image of class ['ok']"
