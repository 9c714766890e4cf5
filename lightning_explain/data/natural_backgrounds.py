"""NaturalShortcut: textured objects on crops of real photographs, the background class a (spurious) label cue.

A Waterbirds-like data set (Sagawa et al. 2020) built from what a package ships, nothing downloaded: the
label is the *shape* of a foreground object (square, disc, triangle, cross) filled with a striped, coloured,
noisy texture whose colours do not depend on the label; the object is composited onto a crop of one of the
photographs inside scikit-image's wheel (``skimage.data``: grass, gravel, brick, ...). Each class has its
background photograph, and a sample shows its class's photograph with probability ``background_agreement``
(0.95 by default; ``1 / num_classes`` makes the background uninformative: a clean control). The ``"counter"``
split shows another class's photograph every time (the worst group): a model that reads the background fails it.

Training crops come from the top 60 % of each photograph and evaluation crops (``"val"``, ``"counter"``) from
the bottom 40 %, so no pixel of an evaluation background was seen in training.

Sample ``i`` is a pure function of ``(seed, split, i)`` through a private :class:`torch.Generator`; the global
RNGs are never read or changed. Needs scikit-image (``pip install 'lightning-explain[natural]'``); the rest of
the package does not.

Example:
    >>> from lightning_explain.data import NaturalShortcut
    >>> ds = NaturalShortcut(8, image_size=32, background_agreement=1.0)
    >>> image, label, object_mask, box = ds[0]
    >>> tuple(image.shape), label, ds.background_class(0) == label, box.tolist() == ds.box(0).tolist()
    ((3, 32, 32), 0, True, True)
"""

from __future__ import annotations

import math
from functools import cache
from typing import Literal, SupportsIndex, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lightning_explain.data.shortcut_shapes import (
    CLASS_NAMES,
    OBJECT_PALETTE,
    _splitmix64,
    check_int,
    sample_generator,
    sample_index,
)

__all__ = ["BACKGROUNDS", "NaturalSample", "NaturalShortcut", "Split", "load_photo"]

#: One sample: ``(image [3, H, W] float32, label int, object_mask [H, W] bool, box [4] float32 xyxy pixels)``.
NaturalSample: TypeAlias = tuple[Tensor, int, Tensor, Tensor]

#: The splits: ``"train"`` (training crops, agreement ``p``), ``"val"`` (evaluation crops, agreement ``p``),
#: ``"counter"`` (evaluation crops, the background always shows another class).
Split = Literal["train", "val", "counter"]

#: Background photograph of each class: names of ``skimage.data`` images stored inside scikit-image's wheel.
BACKGROUNDS: tuple[str, ...] = ("grass", "gravel", "brick", "coffee")

_SPLITS = ("train", "val", "counter")
_TRAIN_ROWS = 0.6  # training crops: the top 60 % of the rows; evaluation crops: the rest
_MIN_OBJECT_FRACTION = 0.4
_MAX_OBJECT_FRACTION = 0.6
_MIN_IMAGE_SIZE = 16
_CROP_MIN, _CROP_MAX = 80, 160  # side of a background crop in photo pixels
_MASK64 = (1 << 64) - 1
_SPLIT_KEYS = {"train": 0x7452, "val": 0x5641, "counter": 0x4354}


@cache
def load_photo(name: str) -> Tensor:
    """The photograph ``skimage.data.<name>()`` as ``float32 [3, H, W]`` in ``[0, 1]`` (grey images repeated).

    Raises:
        ImportError: scikit-image is not installed (the message names the extra that installs it).
        ValueError: ``name`` is not one of the photographs this data set may use (those shipped in the wheel).
    """
    if name not in BACKGROUNDS:
        raise ValueError(
            f"background {name!r} is not one of {list(BACKGROUNDS)} (photographs in scikit-image's wheel)."
        )
    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "NaturalShortcut composites objects onto photographs shipped with scikit-image, which is not installed. "
            "Install it with: pip install 'lightning-explain[natural]' (or pip install scikit-image)."
        ) from err
    array = getattr(skimage.data, name)()
    photo = torch.as_tensor(array).float() / 255.0
    photo = photo[None].expand(3, -1, -1) if photo.ndim == 2 else photo[..., :3].permute(2, 0, 1)
    return photo.contiguous()


def shape_mask(label: int, size: int, top: int, left: int, image_size: int) -> Tensor:
    """The ``[H, W]`` mask of shape ``label`` (0 square, 1 disc, 2 triangle, 3 cross) in the box ``size`` wide at
    ``(top, left)``, by pixel centres (the same shapes as :class:`~lightning_explain.data.ShortcutShapes`)."""
    coords = torch.arange(image_size, dtype=torch.float32) + 0.5
    u = (coords.view(1, -1) - left) / size
    v = (coords.view(-1, 1) - top) / size
    in_box = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    du, dv = (u - 0.5).abs(), (v - 0.5).abs()
    if label == 0:
        return in_box
    if label == 1:
        return du.square() + dv.square() <= 0.25
    if label == 2:
        return in_box & (du <= v / 2)
    return in_box & ((du <= 1 / 6) | (dv <= 1 / 6))


class NaturalShortcut(Dataset[NaturalSample]):
    """Textured shapes on crops of real photographs; the photograph agrees with the label with probability ``p``.

    Labels cycle through the classes: ``label(i) == i % num_classes``. Each sample is drawn from a
    :class:`torch.Generator` seeded with a hash of ``(seed, split, i)`` in a fixed order (background decision
    first, then crop, object and texture), and the draws do not depend on ``background_agreement``: two data sets
    that differ only in it hold the same objects; only the photograph behind them changes.

    Args:
        num_samples: Number of samples; at least 1.
        split: ``"train"``, ``"val"`` or ``"counter"`` (see :data:`Split`). ``"counter"`` ignores
            ``background_agreement``: the background always shows another class.
        image_size: Side ``H == W`` of the square images; at least 16.
        num_classes: Number of shape classes, 2 to 4; class ``k``'s background is ``backgrounds[k]``.
        background_agreement: Probability that the background is the label's photograph (otherwise one of the
            others, uniformly). ``0.95``: a Waterbirds-like shortcut; ``1 / num_classes``: a clean control.
        seed: Data set seed. The same ``(seed, split, i)`` always gives a bit-identical sample.
        backgrounds: Names of the background photographs, one per class, from :data:`BACKGROUNDS`.
        noise: Standard deviation of the gaussian noise added to the whole image; ``>= 0``.

    ``dataset[i]`` returns ``(image, label, object_mask, box)``: ``float32 [3, H, W]`` in ``[0, 1]``, an ``int``,
    the object's pixels ``bool [H, W]`` (never empty), and its tight box ``float32 [4]`` = ``(x0, y0, x1, y1)`` in
    pixels, the pixel centres inside ``[x0, x1) x [y0, y1)`` being the box's pixels (so a box holds its mask).

    Example:
        >>> ds = NaturalShortcut(30, split="counter", image_size=32, seed=3)
        >>> all(ds.background_class(i) != ds.label(i) for i in range(30))
        True
    """

    def __init__(
        self,
        num_samples: int,
        *,
        split: Split = "train",
        image_size: int = 48,
        num_classes: int = 3,
        background_agreement: float = 0.95,
        seed: int = 0,
        backgrounds: tuple[str, ...] | None = None,
        noise: float = 0.03,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}; got {split!r}.")
        self.split: Split = split
        self.image_size = check_int("image_size", image_size, _MIN_IMAGE_SIZE)
        if isinstance(num_classes, bool) or num_classes not in (2, 3, 4):
            raise ValueError(f"num_classes must be one of [2, 3, 4]; got {num_classes!r}.")
        self.num_classes: int = num_classes
        p = background_agreement
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"background_agreement must be a float in [0, 1]; got {p!r}.")
        self.background_agreement = float(p)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int; got {seed!r}.")
        self.seed = seed
        names = tuple(backgrounds) if backgrounds is not None else BACKGROUNDS[:num_classes]
        if len(names) != num_classes or len(set(names)) != num_classes or any(n not in BACKGROUNDS for n in names):
            raise ValueError(
                f"backgrounds must name {num_classes} different photographs from {list(BACKGROUNDS)}; got {names!r}."
            )
        self.backgrounds = names
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise < math.inf:
            raise ValueError(f"noise must be a finite float >= 0; got {noise!r}.")
        self.noise = float(noise)
        self.min_object_size = math.ceil(_MIN_OBJECT_FRACTION * image_size)
        self.max_object_size = math.floor(_MAX_OBJECT_FRACTION * image_size)
        self._seed_key = _splitmix64(((seed & _MASK64) << 16 ^ _SPLIT_KEYS[split]) & _MASK64)
        self._photos = [self._region(load_photo(name)) for name in names]  # fails early without scikit-image
        self._palette = torch.tensor(OBJECT_PALETTE, dtype=torch.float32)
        coords = torch.arange(image_size, dtype=torch.float32) + 0.5
        self._yy, self._xx = coords.view(-1, 1), coords.view(1, -1)

    def _region(self, photo: Tensor) -> Tensor:
        """The rows of ``photo`` this split crops from: the top 60 % for training, the rest for evaluation."""
        cut = round(photo.shape[1] * _TRAIN_ROWS)
        return photo[:, :cut] if self.split == "train" else photo[:, cut:]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the shape classes, indexed by label."""
        return CLASS_NAMES[: self.num_classes]

    def __len__(self) -> int:
        return self.num_samples

    def _index(self, index: SupportsIndex) -> int:
        return sample_index(index, self.num_samples)

    def _generator(self, i: int) -> torch.Generator:
        return sample_generator(self._seed_key, i)

    def _draw_background(self, generator: torch.Generator, label: int) -> int:
        u = float(torch.rand((), generator=generator))  # always two draws, whatever the agreement is
        offset = int(torch.randint(1, self.num_classes, (), generator=generator))
        agree = self.split != "counter" and u < self.background_agreement
        return label if agree else (label + offset) % self.num_classes

    def label(self, index: SupportsIndex) -> int:
        """Label (shape class) of sample ``index``: ``index % num_classes``."""
        return self._index(index) % self.num_classes

    def background_class(self, index: SupportsIndex) -> int:
        """The class whose photograph is behind sample ``index`` (cheap: two draws, no image)."""
        i = self._index(index)
        return self._draw_background(self._generator(i), i % self.num_classes)

    def is_conflicting(self, index: SupportsIndex) -> bool:
        """Whether the background of sample ``index`` shows another class than its label."""
        return self.background_class(index) != self.label(index)

    def box(self, index: SupportsIndex) -> Tensor:
        """The object's box ``float32 [4]`` xyxy of sample ``index`` (the same as ``dataset[index][3]``)."""
        return self[index][3]

    def _crop(self, photo: Tensor, g: torch.Generator) -> Tensor:
        """A random square crop of ``photo`` (side 80 to 160 photo pixels, at most the region), resized to the image
        size with area averaging, flipped left-right half of the time."""
        height, width = photo.shape[1:]
        largest = min(_CROP_MAX, height, width)
        side = int(torch.randint(min(_CROP_MIN, largest), largest + 1, (), generator=g))
        top = int(torch.randint(0, height - side + 1, (), generator=g))
        left = int(torch.randint(0, width - side + 1, (), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5)
        crop = photo[:, top : top + side, left : left + side]
        crop = F.interpolate(crop[None], size=(self.image_size,) * 2, mode="area")[0]
        return crop.flip(-1) if flip else crop

    def _texture(self, g: torch.Generator) -> Tensor:
        """Stripes of two palette colours at a random angle, period and phase: texture, not a flat colour."""
        pick = torch.randperm(len(self._palette), generator=g)[:2]
        first, second = self._palette[pick[0]].view(3, 1, 1), self._palette[pick[1]].view(3, 1, 1)
        angle = float(torch.rand((), generator=g)) * math.pi
        period = 3.0 + 4.0 * float(torch.rand((), generator=g))
        phase = float(torch.rand((), generator=g)) * 2 * math.pi
        along = self._xx * math.cos(angle) + self._yy * math.sin(angle)
        weight = 0.5 + 0.5 * torch.sin(2 * math.pi * along / period + phase)
        return weight * first + (1 - weight) * second

    def __getitem__(self, index: SupportsIndex) -> NaturalSample:
        i = self._index(index)
        label = i % self.num_classes
        g = self._generator(i)
        background = self._crop(self._photos[self._draw_background(g, label)], g)
        size = int(torch.randint(self.min_object_size, self.max_object_size + 1, (), generator=g))
        last = self.image_size - size
        top = int(torch.randint(0, last + 1, (), generator=g))
        left = int(torch.randint(0, last + 1, (), generator=g))
        object_mask = shape_mask(label, size, top, left, self.image_size)
        texture = self._texture(g)
        noise = torch.randn(3, self.image_size, self.image_size, generator=g)
        image = torch.where(object_mask, texture, background)
        image = (image + self.noise * noise).clamp_(0.0, 1.0)
        rows = torch.nonzero(object_mask.any(dim=1)).flatten()
        cols = torch.nonzero(object_mask.any(dim=0)).flatten()
        box = torch.tensor(
            [float(cols[0]), float(rows[0]), float(cols[-1]) + 1, float(rows[-1]) + 1], dtype=torch.float32
        )
        return image, label, object_mask, box

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, split={self.split!r}, "
            f"image_size={self.image_size}, num_classes={self.num_classes}, "
            f"background_agreement={self.background_agreement}, seed={self.seed}, backgrounds={self.backgrounds})"
        )
