"""Synthetic data for studying shortcut learning: :class:`ShortcutShapes` and its data module.

Example:
    >>> from lightning_explain.data import ShortcutShapes
    >>> image, label, object_mask, cue_mask = ShortcutShapes(4, image_size=32)[1]
    >>> tuple(image.shape), label, tuple(object_mask.shape), cue_mask.dtype
    ((3, 32, 32), 1, (32, 32), torch.bool)
"""

from lightning_explain.data.datamodule import ShortcutShapesDataModule
from lightning_explain.data.shortcut_shapes import (
    CLASS_NAMES,
    CUE_COLORS,
    NO_CUE,
    OBJECT_PALETTE,
    ShortcutShapes,
    cue_concept_images,
)

__all__ = [
    "CLASS_NAMES",
    "CUE_COLORS",
    "NO_CUE",
    "OBJECT_PALETTE",
    "ShortcutShapes",
    "ShortcutShapesDataModule",
    "cue_concept_images",
]
