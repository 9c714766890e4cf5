"""Data for studying shortcut learning: :class:`ShortcutShapes` (synthetic), :class:`NaturalShortcut` (objects on
photographs shipped with scikit-image, the ``natural`` extra) and their data modules.

Example:
    >>> from lightning_explain.data import ShortcutShapes
    >>> image, label, object_mask, cue_mask = ShortcutShapes(4, image_size=32)[1]
    >>> tuple(image.shape), label, tuple(object_mask.shape), cue_mask.dtype
    ((3, 32, 32), 1, (32, 32), torch.bool)
"""

from lightning_explain.data.datamodule import ShortcutShapesDataModule
from lightning_explain.data.natural_backgrounds import BACKGROUNDS, NaturalShortcut
from lightning_explain.data.natural_datamodule import NaturalShortcutDataModule
from lightning_explain.data.shortcut_shapes import (
    CLASS_NAMES,
    CUE_COLORS,
    NO_CUE,
    OBJECT_PALETTE,
    ShortcutShapes,
    cue_concept_images,
)

__all__ = [
    "BACKGROUNDS",
    "CLASS_NAMES",
    "CUE_COLORS",
    "NO_CUE",
    "OBJECT_PALETTE",
    "NaturalShortcut",
    "NaturalShortcutDataModule",
    "ShortcutShapes",
    "ShortcutShapesDataModule",
    "cue_concept_images",
]
