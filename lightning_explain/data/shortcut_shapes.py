"""ShortcutShapes: a synthetic dataset with a controllable spurious cue.

Each image shows one shape (square, disc, triangle or cross) whose class is the label. A solid coloured
patch in the top-left corner, the *cue*, shows a class colour that agrees with the label with probability
``cue_agreement``. A model can solve the task by looking at the shape or, when the cue is reliable, by
taking the shortcut and reading the corner. Because the object and cue masks are returned with every
sample, one can measure exactly where an explanation map puts its mass.

Everything is generated on the fly with vectorised torch ops: no files, no downloads. Sample ``i`` depends
only on ``(seed, i)`` through a private :class:`torch.Generator`, so the global RNGs are never read or
changed and reading order, workers and shuffling do not matter.

Example:
    >>> from lightning_explain.data import ShortcutShapes
    >>> ds = ShortcutShapes(8, image_size=32, cue_agreement=1.0)
    >>> image, label, object_mask, cue_mask = ds[0]
    >>> tuple(image.shape), label, ds.cue_class(0) == label
    ((3, 32, 32), 0, True)
"""

from __future__ import annotations

import math
import operator
from typing import SupportsIndex, TypeAlias

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CLASS_NAMES",
    "CUE_COLORS",
    "NO_CUE",
    "OBJECT_PALETTE",
    "Sample",
    "ShortcutShapes",
    "cue_concept_images",
]

#: One sample: ``(image [3, H, W] float32, label int, object_mask [H, W] bool, cue_mask [H, W] bool)``.
Sample: TypeAlias = tuple[Tensor, int, Tensor, Tensor]

#: Shape name of each label.
CLASS_NAMES: tuple[str, ...] = ("square", "disc", "triangle", "cross")

#: RGB colour of the cue patch for each class: red, green, blue, yellow.
CUE_COLORS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
)

#: Foreground colours of the object, drawn uniformly and independently of the label. None of them is a
#: cue colour, so a colour in the image identifies either the cue or the object, never both.
OBJECT_PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, 1.0, 1.0),  # white
    (1.0, 0.6, 0.1),  # orange
    (0.2, 0.9, 0.9),  # cyan
    (0.9, 0.3, 0.9),  # magenta
    (1.0, 0.7, 0.8),  # pink
    (0.6, 1.0, 0.4),  # light green
    (0.6, 0.5, 1.0),  # lavender
    (0.75, 0.75, 0.75),  # light grey
)

#: What :meth:`ShortcutShapes.cue_class` returns when the dataset draws no cue (``cue_agreement=None``).
NO_CUE: int = -1

_MIN_IMAGE_SIZE = 16
_MIN_OBJECT_FRACTION = 0.3
_MAX_OBJECT_FRACTION = 0.5
_CUE_GAP = 1  # pixels between the cue square and the object's bounding box
_BACKGROUND_MAX = 0.3  # background channels are uniform in [0, _BACKGROUND_MAX]
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of SplitMix64: a bijective 64-bit mixer, used to turn ``(seed, i)`` into a seed."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_index(index: SupportsIndex, num_samples: int) -> int:
    """``index`` as a sample number in ``[0, num_samples)`` (negative indices count from the end), else IndexError."""
    i = operator.index(index)
    if i < 0:
        i += num_samples
    if not 0 <= i < num_samples:
        raise IndexError(f"index {operator.index(index)} is out of range for {num_samples} samples.")
    return i


def sample_generator(seed_key: int, i: int) -> torch.Generator:
    """The private generator of sample ``i`` of a data set keyed by ``seed_key`` (the global RNG is never drawn)."""
    return torch.Generator().manual_seed(_splitmix64((seed_key + i) & _MASK64))


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


def check_probability(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be None (no cue) or a float in [0, 1]; got {value!r}.")
    return float(value)


class ShortcutShapes(Dataset[Sample]):
    """Images of one shape plus a corner patch whose colour is a (possibly spurious) class cue.

    Labels cycle through the classes: ``label(i) == i % num_classes``, so every class has the same number
    of samples (up to one). Shuffle in the data loader if order matters.

    Each sample is generated from a :class:`torch.Generator` seeded with a hash of ``(seed, i)``. The draws
    happen in a fixed order (cue decision first, then object, colours and noise) and do not depend on
    ``cue_agreement``, so two datasets that differ only in ``cue_agreement`` hold the same objects and
    backgrounds pixel for pixel; only the cue patch differs. This gives counterfactual pairs for free.

    Args:
        num_samples: Number of samples (``len(dataset)``); at least 1.
        image_size: Side ``H == W`` of the square images; at least 16.
        num_classes: Number of shape classes, 2 to 4: 0 square, 1 disc, 2 triangle, 3 cross.
        cue_agreement: Probability that the cue shows the label's class. Otherwise the cue shows one of
            the other classes, chosen uniformly. ``1.0``: the cue always agrees (a perfect shortcut);
            ``1 / num_classes``: the cue is uninformative; ``0.0``: it always conflicts; ``None``: no cue
            is drawn and ``cue_mask`` is all ``False``.
        seed: Dataset seed. The same ``(seed, i)`` always gives a bit-identical sample.
        cue_size: Side of the cue square in pixels; default ``max(3, image_size // 6)``. It must leave room
            for the largest object beside it.
        noise: Standard deviation of the gaussian noise added to the background and object (not to the
            cue, which is a solid patch); ``>= 0``.

    ``dataset[i]`` returns ``(image, label, object_mask, cue_mask)``:

    - ``image``: ``float32 [3, H, W]`` in ``[0, 1]``;
    - ``label``: python ``int`` (default collate turns a batch into a ``[B]`` long tensor);
    - ``object_mask``: ``bool [H, W]``, the shape's pixels, never empty and disjoint from the cue region;
    - ``cue_mask``: ``bool [H, W]``, the cue square (all ``False`` when ``cue_agreement is None``).

    The object is a shape of side 30-50% of ``image_size`` at a random position that never overlaps the
    cue corner, in a colour from :data:`OBJECT_PALETTE` chosen independently of the label, on a random
    dim background. The cue colour of class ``k`` is :data:`CUE_COLORS` ``[k]``.

    Example:
        >>> ds = ShortcutShapes(600, num_classes=3, cue_agreement=0.0, seed=1)
        >>> image, label, object_mask, cue_mask = ds[4]
        >>> image.dtype, image.shape, label, bool(object_mask.any()), bool((object_mask & cue_mask).any())
        (torch.float32, torch.Size([3, 64, 64]), 1, True, False)
        >>> ds.is_conflicting(4)
        True
    """

    def __init__(
        self,
        num_samples: int,
        *,
        image_size: int = 64,
        num_classes: int = 3,
        cue_agreement: float | None = 1.0,
        seed: int = 0,
        cue_size: int | None = None,
        noise: float = 0.05,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.image_size = check_int("image_size", image_size, _MIN_IMAGE_SIZE)
        if isinstance(num_classes, bool) or num_classes not in (2, 3, 4):
            raise ValueError(f"num_classes must be one of [2, 3, 4]; got {num_classes!r}.")
        self.num_classes: int = num_classes
        self.cue_agreement = check_probability("cue_agreement", cue_agreement)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int; got {seed!r}.")
        self.seed = seed
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise < math.inf:
            raise ValueError(f"noise must be a finite float >= 0; got {noise!r}.")
        self.noise = float(noise)

        self.min_object_size = math.ceil(_MIN_OBJECT_FRACTION * image_size)
        self.max_object_size = math.floor(_MAX_OBJECT_FRACTION * image_size)
        max_cue = image_size - self.max_object_size - _CUE_GAP
        if cue_size is None:
            cue_size = max(3, image_size // 6)
        elif isinstance(cue_size, bool) or not isinstance(cue_size, int) or not 1 <= cue_size <= max_cue:
            raise ValueError(
                f"cue_size must be None or an int in [1, {max_cue}] for image_size={image_size} "
                f"(the object needs room beside the cue); got {cue_size!r}."
            )
        self.cue_size: int = cue_size
        self._seed_key = _splitmix64(seed & _MASK64)

        coords = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres
        self._yy = coords.view(-1, 1)
        self._xx = coords.view(1, -1)
        self._cue_region = torch.zeros(image_size, image_size, dtype=torch.bool)
        self._cue_region[:cue_size, :cue_size] = True
        self._cue_colors = torch.tensor(CUE_COLORS[:num_classes], dtype=torch.float32)
        self._palette = torch.tensor(OBJECT_PALETTE, dtype=torch.float32)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the ``num_classes`` shape classes, indexed by label."""
        return CLASS_NAMES[: self.num_classes]

    def __len__(self) -> int:
        return self.num_samples

    def _index(self, index: SupportsIndex) -> int:
        return sample_index(index, self.num_samples)

    def _generator(self, i: int) -> torch.Generator:
        return sample_generator(self._seed_key, i)

    def _draw_cue_class(self, generator: torch.Generator, label: int) -> int:
        # Always two draws, whatever cue_agreement is, so later draws (the object) do not depend on it.
        u = float(torch.rand((), generator=generator))
        offset = int(torch.randint(1, self.num_classes, (), generator=generator))
        if self.cue_agreement is None:
            return NO_CUE
        return label if u < self.cue_agreement else (label + offset) % self.num_classes

    def label(self, index: SupportsIndex) -> int:
        """Label (shape class) of sample ``index``: ``index % num_classes``."""
        return self._index(index) % self.num_classes

    def cue_class(self, index: SupportsIndex) -> int:
        """Class whose colour the cue of sample ``index`` shows, or :data:`NO_CUE` (-1) without a cue.

        Cheap: it only makes the first two draws of the sample, not the image.
        """
        i = self._index(index)
        return self._draw_cue_class(self._generator(i), i % self.num_classes)

    def is_conflicting(self, index: SupportsIndex) -> bool:
        """Whether sample ``index`` has a cue that shows a class other than its label."""
        i = self._index(index)
        cue = self.cue_class(i)
        return cue != NO_CUE and cue != i % self.num_classes

    def _shape_mask(self, label: int, size: int, top: int, left: int) -> Tensor:
        u = (self._xx - left) / size  # in [0, 1) inside the bounding box
        v = (self._yy - top) / size
        in_box = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
        du, dv = (u - 0.5).abs(), (v - 0.5).abs()
        if label == 0:  # square: the whole box
            mask = in_box
        elif label == 1:  # disc inscribed in the box
            mask = du.square() + dv.square() <= 0.25
        elif label == 2:  # triangle, apex at the top centre, base at the bottom
            mask = in_box & (du <= v / 2)
        else:  # cross / plus, arms one third of the side thick
            mask = in_box & ((du <= 1 / 6) | (dv <= 1 / 6))
        return mask

    def __getitem__(self, index: SupportsIndex) -> Sample:
        i = self._index(index)
        label = i % self.num_classes
        g = self._generator(i)
        cue = self._draw_cue_class(g, label)

        size = int(torch.randint(self.min_object_size, self.max_object_size + 1, (), generator=g))
        last = self.image_size - size  # largest top/left that keeps the object inside the image
        clear = self.cue_size + _CUE_GAP  # a box starting at row or column >= clear misses the cue
        left = int(torch.randint(0, last + 1, (), generator=g))
        top_min = clear if left < clear else 0
        top = int(torch.randint(top_min, last + 1, (), generator=g))
        object_mask = self._shape_mask(label, size, top, left)

        foreground = self._palette[int(torch.randint(len(self._palette), (), generator=g))]
        background = torch.rand(3, generator=g) * _BACKGROUND_MAX
        noise = torch.randn(3, self.image_size, self.image_size, generator=g)

        image = torch.where(object_mask, foreground.view(3, 1, 1), background.view(3, 1, 1))
        image = (image + self.noise * noise).clamp_(0.0, 1.0)
        if cue == NO_CUE:
            cue_mask = torch.zeros_like(self._cue_region)
        else:
            cue_mask = self._cue_region.clone()
            image[:, : self.cue_size, : self.cue_size] = self._cue_colors[cue].view(3, 1, 1)
        return image, label, object_mask, cue_mask

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, cue_agreement={self.cue_agreement}, seed={self.seed}, "
            f"cue_size={self.cue_size}, noise={self.noise})"
        )


def cue_concept_images(
    class_index: int,
    num_samples: int = 32,
    *,
    image_size: int = 64,
    num_classes: int = 3,
    cue_size: int | None = None,
    noise: float = 0.15,
    seed: int = 0,
) -> Tensor:
    """Concept examples for TCAV: images of the dataset's distribution with the corner cue of one class.

    The images are those of ``ShortcutShapes(..., cue_agreement=None)`` (shapes of every class, no cue) with the
    cue patch of ``class_index`` painted in; ``ShortcutShapes(..., cue_agreement=None)`` itself then serves as
    the random examples, so a concept-vs-random CAV points along "this class's cue is present".

    Example:
        >>> x = cue_concept_images(1, 4, image_size=32, cue_size=6)
        >>> tuple(x.shape), bool((x[:, :, :6, :6] == torch.tensor(CUE_COLORS[1]).view(3, 1, 1)).all())
        ((4, 3, 32, 32), True)
    """
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index must lie in [0, {num_classes - 1}]; got {class_index}.")
    plain = ShortcutShapes(
        num_samples,
        image_size=image_size,
        num_classes=num_classes,
        cue_agreement=None,
        seed=seed,
        cue_size=cue_size,
        noise=noise,
    )
    images = torch.stack([plain[i][0] for i in range(num_samples)])
    images[:, :, : plain.cue_size, : plain.cue_size] = torch.tensor(CUE_COLORS[class_index]).view(1, 3, 1, 1)
    return images
