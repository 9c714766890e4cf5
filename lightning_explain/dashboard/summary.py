"""The small per-epoch summary the dashboard reads, logged inside the grids' layout text (no extra pass).

:class:`~lightning_explain.ExplainCallback` already logs ``{tag_prefix}/layout``, one JSON line per explained
epoch that says where each probe image's row lies in each grid. :func:`layout_extras` adds two keys to it, from
values the epoch computed anyway: ``rows`` (each probe image's true class, prediction and explained class, the
caption of the Explain tab's cells) and ``per_image`` (each image's focus, drift and faithfulness numbers, shown
when hovering the charts). Pure Python on small tensors: no TensorBoard import, nothing on the device.

Example:
    >>> import torch
    >>> rows = caption_rows([1, 0], [1, 1], [1, 1], lambda k: ["cat", "dog"][k])
    >>> rows[1]
    {'label': 'dog', 'prediction': 'cat', 'explained': 'dog'}
    >>> per_image_numbers({"explain/gradcam/focus/lift": torch.tensor([0.5, float("nan")])}, "explain")
    {'gradcam/focus/lift': [0.5, None]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["caption_rows", "layout_extras", "per_image_numbers"]


def caption_rows(
    predictions: Sequence[int],
    labels: Sequence[int] | None,
    explained: Sequence[int],
    class_name: Callable[[int], str],
) -> list[dict[str, str | None]]:
    """Per probe image: ``label`` (None without labels), ``prediction`` and ``explained`` as class names
    (``explained`` is None where a targets callable chose the score, index -1)."""
    out: list[dict[str, str | None]] = []
    for i, p in enumerate(predictions):
        y = labels[i] if labels is not None and i < len(labels) else None
        t = explained[i] if i < len(explained) else p
        out.append(
            {
                "label": class_name(int(y)) if y is not None else None,
                "prediction": class_name(int(p)),
                "explained": class_name(int(t)) if t >= 0 else None,
            }
        )
    return out


def per_image_numbers(per_image: Mapping[str, Tensor], prefix: str) -> dict[str, list[float | None]]:
    """``{"{method}/{kind}/{metric}": [value per image, 5 decimals, None for NaN]}`` from the callback's
    ``latest_per_image`` (keys ``{prefix}/{method}/...``)."""
    out: dict[str, list[float | None]] = {}
    head = prefix + "/"
    for key, values in per_image.items():
        if key.startswith(head):
            out[key[len(head) :]] = [round(v, 5) if math.isfinite(v) else None for v in values.float().tolist()]
    return out


def layout_extras(
    predictions: Sequence[int],
    labels: Sequence[int] | None,
    explained: Sequence[int],
    class_name: Callable[[int], str],
    per_image: Mapping[str, Tensor],
    prefix: str,
) -> dict[str, Any]:
    """The keys :func:`~lightning_explain.epoch.grids.layout_json` adds for the dashboard: ``rows`` and
    ``per_image``."""
    return {
        "rows": caption_rows(predictions, labels, explained, class_name),
        "per_image": per_image_numbers(per_image, prefix),
    }
