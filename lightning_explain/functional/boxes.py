"""Boxes as masks: every focus number of a box is the number of the filled rectangle.

A box is ``(x0, y0, x1, y1)`` in pixels (xyxy, x along the width, y along the height, the origin at the top-left
corner of the image). Its mask holds the pixels whose *centres* lie inside ``[x0, x1) x [y0, y1)``: pixel
``(row r, column c)`` belongs to it iff ``x0 <= c + 0.5 < x1`` and ``y0 <= r + 0.5 < y1``. An integer box
``(x0, y0, x1, y1)`` is thus exactly ``mask[y0:y1, x0:x1]``; several boxes of one image are their union; a box of
zero width or height is empty (its focus numbers are NaN, as for an empty mask). Energy in a box, lift, mask AUC
and the pointing game are then the mask numbers of :mod:`~lightning_explain.functional.metrics` on that mask.

Pure tensor functions, no Lightning import.

Example:
    >>> import torch
    >>> boxes_to_masks(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), 3, 4).int()
    tensor([[[0, 1, 1, 0],
             [0, 1, 1, 0],
             [0, 0, 0, 0]]], dtype=torch.int32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Boxes", "boxes_to_masks", "check_boxes", "is_boxes"]

#: Boxes of a batch: a ``[B, 4]`` tensor (one box per image) or a sequence of ``B`` entries, each ``[K, 4]`` or
#: ``[4]`` (tensor or nested lists of numbers; ``K`` may differ per image and be 0).
Boxes = Tensor | Sequence[Any]


def is_boxes(value: Any) -> bool:
    """Whether ``value`` is meant as boxes, not masks: a 2-d tensor ``[B, 4]`` or a list/tuple (of boxes per image).

    Example:
        >>> is_boxes(torch.zeros(2, 4)), is_boxes(torch.zeros(2, 8, 8)), is_boxes([torch.zeros(0, 4)])
        (True, False, True)
    """
    if isinstance(value, Tensor):
        return value.ndim == 2
    return isinstance(value, (list, tuple))


def _per_image(boxes: Boxes, name: str) -> list[Tensor]:
    """Each image's boxes as a float ``[K, 4]`` tensor."""
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(
                f"{name} has shape {list(boxes.shape)}; boxes must be [B, 4] as (x0, y0, x1, y1) in pixels, or a list "
                "with the boxes [K, 4] of each image."
            )
        return [b[None] for b in boxes.detach().cpu().double()]
    out = []
    for i, entry in enumerate(boxes):
        try:
            box = torch.as_tensor(entry, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name}[{i}] is not a box or a list of boxes (x0, y0, x1, y1); got {type(entry).__name__}."
            ) from None
        if box.ndim == 1 and box.shape[0] == 4:
            box = box[None]
        elif box.numel() == 0:
            box = box.reshape(0, 4)
        if box.ndim != 2 or box.shape[-1] != 4:
            raise ValueError(
                f"{name}[{i}] has shape {list(box.shape)}; the boxes of one image must be [4] or [K, 4] as "
                "(x0, y0, x1, y1) in pixels."
            )
        out.append(box)
    return out


def check_boxes(boxes: Boxes, height: int, width: int, *, batch_size: int | None = None, name: str = "boxes") -> None:
    """Raise a ValueError naming ``name`` unless ``boxes`` are finite xyxy boxes inside a ``height x width`` image.

    Each box needs ``0 <= x0 <= x1 <= width`` and ``0 <= y0 <= y1 <= height``; with ``batch_size``, one entry
    per image.
    """
    per_image = _per_image(boxes, name)
    if batch_size is not None and len(per_image) != batch_size:
        raise ValueError(f"{name} has boxes for {len(per_image)} images; expected one entry per image, {batch_size}.")
    for i, box in enumerate(per_image):
        if box.numel() == 0:
            continue
        if not bool(torch.isfinite(box).all()):
            raise ValueError(f"{name}[{i}] holds NaN or inf: {box.tolist()}.")
        x0, y0, x1, y1 = box.unbind(dim=1)
        if bool(((x1 < x0) | (y1 < y0)).any()):
            raise ValueError(f"{name}[{i}] = {box.tolist()} has x1 < x0 or y1 < y0; boxes are (x0, y0, x1, y1).")
        if bool(((x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height)).any()):
            raise ValueError(
                f"{name}[{i}] = {box.tolist()} lies (partly) outside the {width} x {height} (width x height) image; "
                f"boxes are (x0, y0, x1, y1) in pixels with 0 <= x0 <= x1 <= {width} and 0 <= y0 <= y1 <= {height}. "
                "Clip the boxes to the image (or rescale them if they are relative to another size)."
            )


def boxes_to_masks(boxes: Boxes, height: int, width: int, *, name: str = "boxes") -> Tensor:
    """The ``bool [B, height, width]`` masks of ``boxes`` (pixel centres inside ``[x0, x1) x [y0, y1)``, union per
    image), after :func:`check_boxes`.

    Example:
        >>> boxes_to_masks([[[0, 0, 1, 1], [3, 2, 4, 3]], []], 3, 4).sum(dim=(1, 2)).tolist()
        [2, 0]
    """
    check_boxes(boxes, height, width, name=name)
    per_image = _per_image(boxes, name)
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    masks = torch.zeros(len(per_image), height, width, dtype=torch.bool)
    for i, box in enumerate(per_image):
        for x0, y0, x1, y1 in box.tolist():
            inside_x = (cols >= x0) & (cols < x1)
            inside_y = (rows >= y0) & (rows < y1)
            masks[i] |= inside_y[:, None] & inside_x[None, :]
    return masks
