"""Boxes as masks: the pixel-centre rule, the checks, and every focus number of a box against a direct computation."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_explain.functional.boxes import boxes_to_masks, check_boxes, is_boxes
from lightning_explain.functional.metrics import focus_report


def test_integer_box_is_the_slice_and_fractional_boxes_follow_pixel_centres() -> None:
    masks = boxes_to_masks(torch.tensor([[2.0, 1.0, 5.0, 4.0], [0.4, 0.6, 2.5, 1.5]]), 6, 7)
    expected = torch.zeros(2, 6, 7, dtype=torch.bool)
    expected[0, 1:4, 2:5] = True
    # Second box: no row centre (0.5, 1.5, ...) lies in [0.6, 1.5), so it holds no pixel at all.
    assert torch.equal(masks, expected)
    half = boxes_to_masks([[0.5, 0.5, 2.5, 1.5]], 3, 3)
    assert half[0].nonzero().tolist() == [[0, 0], [0, 1]]  # centres x in {0.5, 1.5}, y in {0.5}


def test_list_of_boxes_per_image_is_their_union_and_an_empty_list_an_empty_mask() -> None:
    masks = boxes_to_masks([torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]]), [], [[3, 0, 4, 1]]], 4, 4)
    assert masks.sum(dim=(1, 2)).tolist() == [7, 0, 1]
    assert bool(masks[2, 0, 3])


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (torch.zeros(2, 5), r"shape \[2, 5\]; boxes must be \[B, 4\]"),
        ([[[0, 0, 1]]], r"boxes\[0\] has shape \[1, 3\]"),
        (torch.tensor([[0.0, 0.0, 9.0, 2.0]]), r"outside the 8 x 4 \(width x height\) image"),
        (torch.tensor([[-1.0, 0.0, 2.0, 2.0]]), "outside"),
        (torch.tensor([[3.0, 0.0, 2.0, 2.0]]), "x1 < x0"),
        (torch.tensor([[0.0, 0.0, float("nan"), 2.0]]), "NaN or inf"),
        (["box"], r"boxes\[0\] is not a box"),
    ],
)
def test_bad_boxes_raise_a_clear_error(boxes: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_boxes(boxes, 4, 8)  # type: ignore[arg-type]


def test_batch_size_is_checked() -> None:
    with pytest.raises(ValueError, match="boxes for 1 images; expected one entry per image, 2"):
        check_boxes(torch.zeros(1, 4), 4, 4, batch_size=2)


def test_is_boxes_tells_boxes_from_masks() -> None:
    assert is_boxes(torch.zeros(3, 4)) and is_boxes([[0, 0, 1, 1]]) and is_boxes(())
    assert not is_boxes(torch.zeros(3, 4, 4)) and not is_boxes(torch.zeros(3, 1, 4, 4))


def _direct(maps: torch.Tensor, box: tuple[int, int, int, int]) -> dict[str, float]:
    """Each focus number of one integer box, computed from the slice and explicit pixel pairs."""
    x0, y0, x1, y1 = box
    height, width = maps.shape
    inside = [(r, c) for r in range(height) for c in range(width) if x0 <= c < x1 and y0 <= r < y1]
    outside = [(r, c) for r in range(height) for c in range(width) if (r, c) not in inside]
    total = float(maps.sum())
    energy = float(maps[y0:y1, x0:x1].sum()) / total
    area = (x1 - x0) * (y1 - y0) / (height * width)
    pairs = list(itertools.product(inside, outside))
    wins = sum(1.0 if maps[a] > maps[b] else 0.5 if maps[a] == maps[b] else 0.0 for a, b in pairs)
    peak = divmod(int(maps.argmax()), width)
    return {
        "energy_in_object": energy,
        "object_area": area,
        "lift": (energy - area) / (1 - area),
        "mask_auc": wins / len(pairs),
        "pointing_game": float(x0 <= peak[1] < x1 and y0 <= peak[0] < y1),
        "energy_in_cue": energy,
        "cue_area": area,
        "cue_lift": (energy - area) / (1 - area),
    }


def test_every_focus_number_of_a_box_matches_a_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 6, 7, generator=generator).round(decimals=1)  # ties on purpose (the AUC counts them half)
    boxes = [(1, 2, 4, 5), (0, 0, 7, 1), (5, 3, 7, 6)]
    masks = boxes_to_masks(torch.tensor(boxes, dtype=torch.float32), 6, 7)
    report = focus_report(maps, masks, masks)
    for i, box in enumerate(boxes):
        for name, value in _direct(maps[i], box).items():
            assert report[name][i].item() == pytest.approx(value, abs=1e-6), (name, i)
