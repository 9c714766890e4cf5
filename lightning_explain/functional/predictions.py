"""The model's predictions for the views that need them (errors, TCAV): no-grad forwards and what they feed.

No Lightning import. The callers put the model in eval mode (``capture.preserve_model_state``) where needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from lightning_explain.capture import preserve_rng
from lightning_explain.functional.engine import explain
from lightning_explain.functional.targets import OutputTransform, logits_from_output

__all__ = ["first_logits", "no_grad_logits", "pair_maps", "predicted_classes", "split_by_class"]


def no_grad_logits(model: nn.Module, images: Tensor, output_transform: OutputTransform = None) -> Tensor:
    """``[B, C]`` logits of one no-grad forward, with the RNG states restored after (dropout, augmentations)."""
    with preserve_rng(), torch.no_grad():
        return logits_from_output(model(images), output_transform)


def predicted_classes(model: nn.Module, images: Tensor, output_transform: OutputTransform = None) -> Tensor:
    """The predicted class per image, ``[B]`` long on the CPU, from one no-grad forward (also under inference mode).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> predicted_classes(model, torch.rand(2, 3, 2, 2)).shape
        torch.Size([2])
    """
    with torch.inference_mode(False), torch.no_grad():
        return logits_from_output(model(images.clone()), output_transform).argmax(dim=1).cpu()


def first_logits(
    candidates: Iterable[object], batch_size: int, output_transform: OutputTransform = None
) -> Tensor | None:
    """The first candidate that reads as ``[batch_size, C]`` logits (e.g. ``validation_step``'s output, or the
    output a forward hook saw), or None.

    Example:
        >>> first_logits([None, "text", torch.zeros(4, 3)], batch_size=4).shape
        torch.Size([4, 3])
    """
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            value = logits_from_output(candidate, output_transform)
        except (ValueError, TypeError):
            continue
        if value.shape[0] == batch_size:
            return value
    return None


def pair_maps(
    model: nn.Module,
    images: Tensor,
    layer: str | None,
    method: str,
    predicted: Tensor,
    true: Tensor,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Maps ``[n, 2, H, W]``: for the predicted class, then the true class, from one pass over ``[x; x]``."""
    targets = torch.cat([predicted, true]).to(images.device)
    out = explain(model, torch.cat([images, images]), layer, (method,), targets, output_transform=output_transform)[
        method
    ]
    n = images.shape[0]
    return torch.stack([out[:n], out[n:]], dim=1)


def split_by_class(images: Tensor, labels: Tensor, classes: Sequence[int]) -> dict[int, Tensor]:
    """``{k: the images of class k}`` for each of ``classes`` (empty ``[0, C, H, W]`` where none).

    Example:
        >>> parts = split_by_class(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), [0, 2])
        >>> {k: v.shape[0] for k, v in parts.items()}
        {0: 2, 2: 0}
    """
    labels = labels.to(images.device)
    return {k: images[labels == k] for k in classes}
