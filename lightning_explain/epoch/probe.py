"""The fixed probe batch: which images are explained every epoch, how they are read and kept.

The probe is read once, by dataset index where the dataset allows it (no DataLoader iterator: creating one
draws from the global RNG and may spawn worker processes), kept on the CPU, and moved to the model's device
for each pass. Reading it never changes the global random number generators.

By default the probe is drawn across the classes: when the dataset declares its labels without reading the images
(``targets``, as torchvision's ``ImageFolder``, ``DatasetFolder``, CIFAR and MNIST do, also through ``Subset``), the
classes take turns, each giving its samples in dataset order (:func:`balanced_indices`), so a dataset sorted by class
does not give a probe of its first class only. Other datasets give their first samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data.dataloader import default_collate

from lightning_explain.capture import preserve_rng
from lightning_explain.functional.boxes import Boxes, boxes_to_masks, check_boxes, is_boxes

__all__ = [
    "BatchUnpacker",
    "Probe",
    "balanced_indices",
    "check_probe",
    "dataset_class_names",
    "dataset_targets",
    "describe_classes",
    "first_val_loader",
    "masks_from_batch",
    "normalisation_problem",
    "probe_from_dataloader",
    "probe_from_dataset",
    "probe_mask",
    "sampled_indices",
    "unpack_batch",
]

#: A user function from one batch to ``(images, labels or None)``.
BatchUnpacker = Callable[[Any], "tuple[Tensor, Tensor | None]"]


@dataclass
class Probe:
    """The probe images ``[N, C, H, W]`` (CPU), their labels ``[N]`` when known, and named masks ``[N, H, W]``.

    ``batch_keys`` lists the keys of the (dict) batches it was read from, for messages about missing keys.
    """

    images: Tensor
    labels: Tensor | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)
    batch_keys: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def masks_from_batch(
    batch: Any, keys: Mapping[str, int | str], batch_size: int, size: tuple[int, int] | None = None
) -> dict[str, Tensor]:
    """Pick masks out of a batch: ``keys`` maps a mask name to a tuple index or a dict key.

    Each mask must be ``[B, H, W]`` (or ``[B, 1, H, W]``); non-boolean masks are thresholded at 0.5. With the
    images' ``size`` ``(H, W)``, boxes are accepted too (``[B, 4]`` xyxy pixels, or a list of each image's boxes) and
    turned into masks by :func:`~lightning_explain.functional.boxes.boxes_to_masks`.
    """
    out: dict[str, Tensor] = {}
    for name, key in keys.items():
        try:
            value = batch[key]
        except (KeyError, IndexError, TypeError):
            kind = (
                f"a mapping with keys {sorted(map(str, batch))}" if isinstance(batch, Mapping) else type(batch).__name__
            )
            raise ValueError(
                f"{name}_mask_key={key!r} selects nothing in a validation batch ({kind}). Give the tuple position or "
                "dict key of the mask, or pass the masks for the probe explicitly."
            ) from None
        if size is not None and is_boxes(value):
            out[name] = boxes_to_masks(value, *size, name=f"the boxes at {name}_mask_key={key!r}")
            if out[name].shape[0] != batch_size:
                raise ValueError(
                    f"{name}_mask_key={key!r} selects boxes for {out[name].shape[0]} images in a batch of {batch_size}."
                )
            continue
        mask = torch.as_tensor(value)
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.ndim != 3 or mask.shape[0] != batch_size:
            raise ValueError(
                f"{name}_mask_key={key!r} selects a value of shape {list(mask.shape)}; a mask must be [B, H, W] "
                f"with B = {batch_size} (or boxes [B, 4] as (x0, y0, x1, y1) in pixels)."
            )
        out[name] = mask.detach().bool() if mask.dtype == torch.bool else mask.detach() > 0.5
    return out


def probe_mask(probe: Tensor | None, value: Tensor | Boxes, name: str) -> Tensor:
    """An explicit probe's masks ``[N, H, W]`` as given, or the masks of boxes (``[N, 4]`` xyxy pixels, or a list of
    each image's boxes; checked against the probe's size, see :func:`~lightning_explain.functional.boxes_to_masks`).
    """
    if probe is not None and is_boxes(value):
        height, width = int(probe.shape[-2]), int(probe.shape[-1])
        check_boxes(value, height, width, batch_size=int(probe.shape[0]), name=name)
        return boxes_to_masks(value, height, width, name=name)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be masks [N, H, W] or boxes [N, 4]; got {type(value).__name__}.")
    return value


def _image_size(images: Tensor) -> tuple[int, int] | None:
    """``(H, W)`` of images ``[B, C, H, W]`` (or ``[B, H, W]``), the frame boxes are read in; None for other shapes."""
    return (int(images.shape[-2]), int(images.shape[-1])) if images.ndim >= 3 else None


def _as_labels(value: Any, batch: int) -> Tensor | None:
    """Class indices ``[B]`` when ``value`` looks like them; None otherwise (no labels shown or used)."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            return None
    if value.ndim != 1 or value.shape[0] != batch or value.is_floating_point() or value.is_complex():
        return None
    labels: Tensor = value.detach().to(torch.long)
    return labels


def unpack_batch(
    batch: Any,
    *,
    input_key: str = "image",
    label_key: str = "label",
    unpacker: BatchUnpacker | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Split a batch into ``(images, labels or None)``.

    Understands a tensor, ``(x, y)``, ``(x, y, *extra)``, a mapping with ``input_key`` / ``label_key``, or
    anything a user ``unpacker`` understands.

    Example:
        >>> x, y = unpack_batch((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])))
        >>> x.shape, y.tolist()
        (torch.Size([2, 3, 8, 8]), [0, 1])
    """
    if unpacker is not None:
        images, labels = unpacker(batch)
    elif isinstance(batch, Tensor):
        images, labels = batch, None
    elif isinstance(batch, Mapping):
        if input_key not in batch:
            raise ValueError(
                f"the batch is a mapping without the key {input_key!r} (keys: {sorted(map(str, batch))}). "
                "Pass input_key='<key of the images>' (and label_key=...), or unpack_batch=<callable>."
            )
        images, labels = batch[input_key], batch.get(label_key)
    elif isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) > 0:
        images, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        raise TypeError(
            f"cannot find images in a batch of type {type(batch).__name__}. Pass unpack_batch=<callable "
            "returning (images, labels or None)>."
        )
    if not isinstance(images, Tensor):
        raise TypeError(
            f"the batch's images are a {type(images).__name__}, not a tensor. Pass unpack_batch=<callable "
            "returning (images, labels or None)>, or input_key=... for dict batches."
        )
    return images, _as_labels(labels, int(images.shape[0])) if images.ndim > 0 else None


def _check_like_first(images: Tensor, first: Tensor | None) -> None:
    """Raise ValueError when a batch's ``images`` have no batch dimension, or another shape than the first batch's
    (the probe is one tensor: its batches are joined along the first dimension)."""
    if images.ndim == 0:
        raise ValueError(
            "the validation batches' images are a 0-dim tensor (a single number), not a batch [B, C, H, W]. Pass "
            "unpack_batch=<callable returning (images, labels or None)> if the images are elsewhere in the batch."
        )
    if first is not None and images.shape[1:] != first.shape[1:]:
        raise ValueError(
            f"the validation batches hold images of different shapes: {list(first.shape)} in the first batch, "
            f"{list(images.shape)} later; the probe joins its images into one tensor. Pass num_probe <= "
            f"{first.shape[0]} (the first batch's size), or probe=<a [N, C, H, W] tensor> (or probe_indices=[...])."
        )


def _dict_keys(batch: Any, label_key: str, unpacker: BatchUnpacker | None) -> tuple[str, ...] | None:
    """The keys of a dict ``batch``; warns when it has no ``label_key`` (the probe then has no labels)."""
    if not isinstance(batch, Mapping):
        return None
    keys = tuple(sorted(map(str, batch)))
    if unpacker is None and label_key not in batch:
        warnings.warn(
            f"the validation batches are dicts with keys {list(keys)} but no {label_key!r}: the probe has no labels "
            "(no true class in the captions; targets='label' cannot work). Pass label_key='<key of the labels>', "
            "or unpack_batch=<callable returning (images, labels)>.",
            UserWarning,
            stacklevel=4,
        )
    return keys


def _finish(
    images: Tensor, labels: Tensor | None, masks: dict[str, Tensor], wanted: int, available: int, source: str
) -> Probe:
    if available < wanted:
        warnings.warn(
            f"num_probe={wanted} but {source} has only {available} samples; the probe uses those {available}.",
            UserWarning,
            stacklevel=3,
        )
    with torch.inference_mode(False):
        images = images[:wanted].detach().cpu().clone()
        labels = labels[:wanted].detach().cpu().clone() if labels is not None else None
        masks = {name: m[:wanted].detach().cpu().clone() for name, m in masks.items()}
    return Probe(images, labels, masks)


def probe_from_dataset(
    dataset: Any,
    indices: Sequence[int],
    *,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    input_key: str = "image",
    label_key: str = "label",
    unpacker: BatchUnpacker | None = None,
    mask_keys: Mapping[str, int | str] | None = None,
) -> Probe:
    """Read the samples at ``indices`` from a map-style dataset and collate them into a probe."""
    size = len(dataset)
    bad = [i for i in indices if not -size <= int(i) < size]
    if bad:
        raise IndexError(f"probe_indices {bad} are out of range for a validation dataset of {size} samples.")
    with preserve_rng():
        samples = [dataset[int(i)] for i in indices]
        batch = (collate_fn or default_collate)(samples)
    images, labels = unpack_batch(batch, input_key=input_key, label_key=label_key, unpacker=unpacker)
    masks = masks_from_batch(batch, mask_keys or {}, int(images.shape[0]), _image_size(images))
    probe = _finish(images, labels, masks, len(indices), len(indices), "the dataset")
    probe.batch_keys = _dict_keys(batch, label_key, unpacker)
    return probe


def probe_from_dataloader(
    loader: Any,
    num: int,
    *,
    input_key: str = "image",
    label_key: str = "label",
    unpacker: BatchUnpacker | None = None,
    mask_keys: Mapping[str, int | str] | None = None,
    owner: str = "the callback",
) -> Probe:
    """``num`` samples of ``loader``, across the classes where the dataset declares its labels.

    A map-style dataset behind a ``DataLoader`` is read by index and collated with the loader's ``collate_fn``:
    the indices of :func:`balanced_indices` when :func:`dataset_targets` finds its labels, else
    ``dataset[0] .. dataset[num-1]``; anything else is iterated, with the RNG states restored after.
    A loader with fewer samples gives what it has, with a warning. ``owner`` names the reader in the error of an
    empty loader.
    """
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, DataLoader) and dataset is not None and not isinstance(dataset, IterableDataset):
        try:
            size = len(dataset)
        except TypeError:
            size = -1
        if size >= 0:
            if size == 0:
                raise ValueError(f"the validation dataset is empty; {owner} has no images to explain.")
            count = min(num, size)
            targets = dataset_targets(dataset)
            probe = probe_from_dataset(
                dataset,
                balanced_indices(targets, count) if targets is not None else range(count),
                collate_fn=loader.collate_fn,
                input_key=input_key,
                label_key=label_key,
                unpacker=unpacker,
                mask_keys=mask_keys,
            )
            finished = _finish(probe.images, probe.labels, probe.masks, num, count, "the validation dataset")
            finished.batch_keys = probe.batch_keys
            return finished

    images: list[Tensor] = []
    labels: list[Tensor | None] = []
    masks: list[dict[str, Tensor]] = []
    seen = 0
    keys: tuple[str, ...] | None = None
    with preserve_rng():
        for batch in loader:
            x, y = unpack_batch(batch, input_key=input_key, label_key=label_key, unpacker=unpacker)
            _check_like_first(x, images[0] if images else None)
            if not images:
                keys = _dict_keys(batch, label_key, unpacker)
            images.append(x)
            labels.append(y)
            masks.append(masks_from_batch(batch, mask_keys or {}, int(x.shape[0]), _image_size(x)))
            seen += int(x.shape[0])
            if seen >= num:
                break
    if not images:
        raise ValueError(f"the validation dataloader is empty; {owner} has no images to explain.")
    all_labels = None if any(y is None for y in labels) else torch.cat([y for y in labels if y is not None])
    all_masks = {name: torch.cat([m[name] for m in masks]) for name in masks[0]}
    probe = _finish(torch.cat(images), all_labels, all_masks, num, seen, "the validation dataloader")
    probe.batch_keys = keys
    return probe


def dataset_targets(dataset: Any) -> list[int] | None:
    """The class index of every sample, when the dataset declares them without reading its images: ``targets``
    (torchvision's ``ImageFolder``, ``DatasetFolder``, CIFAR, MNIST), also through ``Subset``; None otherwise.

    Example:
        >>> class Folder(torch.utils.data.Dataset):
        ...     targets = [0, 0, 1, 1, 2]
        ...     def __len__(self):
        ...         return 5
        >>> dataset_targets(torch.utils.data.Subset(Folder(), [4, 0]))
        [2, 0]
    """
    chain: list[Any] = []
    for _ in range(4):  # Subset of a Subset of ...
        targets = getattr(dataset, "targets", None)
        if targets is not None:
            try:
                labels = torch.as_tensor(targets)
            except (TypeError, ValueError, RuntimeError):
                return None
            if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
                return None
            values: list[int] = labels.tolist()
            for subset in reversed(chain):
                values = [values[int(i)] for i in subset.indices]
            return values
        if not hasattr(dataset, "indices") or not hasattr(dataset, "dataset"):
            return None
        chain.append(dataset)
        dataset = dataset.dataset
    return None


def balanced_indices(targets: Sequence[int], num: int) -> list[int]:
    """``num`` dataset indices drawn across the classes: the classes take turns (in class order), each giving its
    samples in dataset order; returned in dataset order. Deterministic.

    Example:
        >>> balanced_indices([0, 0, 0, 0, 1, 1, 2], 5)
        [0, 1, 4, 5, 6]
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < num and any(depth < len(q) for q in queues):
        chosen.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return sorted(chosen[:num])


def describe_classes(
    labels: Tensor, class_names: Sequence[str] | None = None, known: Sequence[int] | None = None
) -> tuple[str, str | None]:
    """One line naming the classes the probe's ``labels`` cover (with counts), and a warning naming the classes
    of ``known`` (or of ``class_names``) that the probe misses (None when it misses none).

    Example:
        >>> describe_classes(torch.tensor([0, 0, 1]), ["cat", "dog", "fox"])
        ('3 images: cat x2, dog x1', "no probe image of class ['fox']")
    """
    counts = torch.bincount(labels.clamp_min(0)).tolist() if labels.numel() else []

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)

    def shown(c: int) -> str:  # one console line: a name with a line break or an escape code is quoted
        text = name(c)
        return text if text and text.isprintable() else repr(text)

    line = f"{labels.numel()} images: " + ", ".join(f"{shown(c)} x{n}" for c, n in enumerate(counts) if n)
    universe = sorted(set(known)) if known is not None else list(range(len(class_names or [])))
    missing = [name(c) for c in universe if c >= len(counts) or counts[c] == 0]
    return line, (f"no probe image of class {missing}" if missing else None)


def check_probe(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
    """Setup checks on the probe images ``[N, C, H, W]`` that the model's dry run cannot make.

    Raises:
        ValueError: ``mean`` / ``std`` have neither one value nor one per channel.

    Warns:
        UserWarning: some probe images hold NaN or inf (their maps will be NaN and shown blank); with ``mean`` and
            ``std``, the images do not look normalised with them (:func:`normalisation_problem`).
    """
    channels = int(images.shape[1])
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, channels):
            raise ValueError(
                f"{name} has {len(values)} values but the probe images have {channels} channels; give one value per "
                f"channel (or a single value for all), e.g. {name}={[round(float(values[0]), 3)] * channels}."
            )
    if images.is_floating_point():
        finite = torch.isfinite(images.flatten(1)).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            warnings.warn(
                f"ExplainCallback: probe images {bad} hold NaN or inf values; their maps will be NaN and shown blank. "
                "Choose other images with probe_indices=[...] or clean the data.",
                UserWarning,
                stacklevel=3,
            )
    problem = normalisation_problem(images, mean, std)
    if problem is not None:
        warnings.warn(f"ExplainCallback: {problem}", UserWarning, stacklevel=3)


def normalisation_problem(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> str | None:
    """Why the probe ``images`` do not look normalised with ``mean`` / ``std`` (None when they do, or when either is
    missing): undoing the normalisation (``x * std + mean``) must give pixels in about [0, 1] for display.

    Example:
        >>> normalisation_problem(torch.full((1, 3, 4, 4), 200.0), [0.5] * 3, [0.25] * 3)[:52]
        'after undoing mean/std the probe pixels reach 50.5, '
    """
    if mean is None or std is None or not images.is_floating_point() or images.numel() == 0:
        return None
    channels = int(images.shape[1])
    m = torch.tensor([float(v) for v in mean], dtype=torch.float64).expand(channels).reshape(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=torch.float64).expand(channels).reshape(1, -1, 1, 1)
    raw = images.detach().double()
    shown = raw * s + m
    finite = torch.isfinite(shown)
    if not bool(finite.any()):
        return None
    low, high = float(shown[finite].min()), float(shown[finite].max())
    if high > 1.5 or low < -0.5:
        scale = " (0-255 images: divide by 255 before normalising, e.g. ToTensor)" if high > 10 else ""
        return (
            f"after undoing mean/std the probe pixels reach {high:.1f}, and go down to {low:.2f}, outside the "
            f"display range [0, 1]: the images are not normalised with mean={list(mean)}, std={list(std)}{scale}. "
            "Pass the transform's own mean/std, or none if it does not normalise; the input cells are shown clipped."
        )
    if float(raw[torch.isfinite(raw)].min()) >= 0 and float(m.max()) > 0.05:
        return (
            f"the probe images hold no negative value, as images that were never normalised do; undoing "
            f"mean={list(mean)}, std={list(std)} squeezes them into [{low:.2f}, {high:.2f}] (washed out). If the "
            "transform does not normalise, pass no mean/std."
        )
    return None


def dataset_class_names(dataset: Any) -> list[str] | None:
    """The class names a dataset declares (``classes`` of ImageFolder, CIFAR, MNIST...), also through ``Subset``.

    Example:
        >>> class Folder:
        ...     classes = ["cat", "dog"]
        >>> dataset_class_names(torch.utils.data.Subset(Folder(), [0]))
        ['cat', 'dog']
    """
    for _ in range(4):  # Subset of a Subset of ...
        classes = getattr(dataset, "classes", None)
        if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
            return list(classes)
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def first_val_loader(trainer: Any) -> Any | None:
    """The first validation dataloader of a Lightning ``trainer`` (the probe's source), or None."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


def sampled_indices(loader: Any) -> list[int] | None:
    """The dataset indices ``loader``'s sampler visits, in order (this rank's shard under a ``DistributedSampler``),
    or None when the loader has no sampler with a length (an iterable dataset). The RNG states are restored after.
    """
    sampler = getattr(loader, "sampler", None)
    if sampler is None or not hasattr(sampler, "__len__"):
        return None
    with preserve_rng():
        try:
            return [int(i) for i in sampler]
        except (TypeError, ValueError):
            return None
