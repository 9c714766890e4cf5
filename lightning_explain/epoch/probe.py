"""The fixed probe batch: which images are explained every epoch, how they are read and kept.

The probe is read once, by dataset index where the dataset allows it (no DataLoader iterator: creating one
draws from the global RNG and may spawn worker processes), kept on the CPU, and moved to the model's device
for each pass. Reading it never changes the global random number generators.
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
    "check_probe",
    "dataset_class_names",
    "first_val_loader",
    "masks_from_batch",
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
    """The probe images ``[N, C, H, W]`` (CPU), their labels ``[N]`` when known, and named masks ``[N, H, W]``."""

    images: Tensor
    labels: Tensor | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)

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
    return _finish(images, labels, masks, len(indices), len(indices), "the dataset")


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
    """The first ``num`` samples of ``loader``.

    A map-style dataset behind a ``DataLoader`` is read by index (``dataset[0] .. dataset[num-1]``) and
    collated with the loader's ``collate_fn``; anything else is iterated, with the RNG states restored after.
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
            probe = probe_from_dataset(
                dataset,
                range(count),
                collate_fn=loader.collate_fn,
                input_key=input_key,
                label_key=label_key,
                unpacker=unpacker,
                mask_keys=mask_keys,
            )
            return _finish(probe.images, probe.labels, probe.masks, num, count, "the validation dataset")

    images: list[Tensor] = []
    labels: list[Tensor | None] = []
    masks: list[dict[str, Tensor]] = []
    seen = 0
    with preserve_rng():
        for batch in loader:
            x, y = unpack_batch(batch, input_key=input_key, label_key=label_key, unpacker=unpacker)
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
    return _finish(torch.cat(images), all_labels, all_masks, num, seen, "the validation dataloader")


def check_probe(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
    """Setup checks on the probe images ``[N, C, H, W]`` that the model's dry run cannot make.

    Raises:
        ValueError: ``mean`` / ``std`` have neither one value nor one per channel.

    Warns:
        UserWarning: some probe images hold NaN or inf (their maps will be NaN and shown blank).
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
