"""Bookkeeping between the callbacks and the pure functions: focus and drift per epoch, the most-confused examples.

:class:`MapMetrics` keeps, per method, the probe's maps of the first and of the previous explained epoch
(downsampled, on the CPU) and turns each new epoch's maps into per-image focus and drift values. It holds no
Lightning objects; its state goes into the callback's checkpoint so a resumed run continues the history.

:class:`ConfusedExamples` keeps the ``k`` most confident wrong predictions seen while a validation epoch runs
(for :class:`~lightning_explain.ErrorAttribution`), on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain.functional.metrics import drift_report, focus_report

__all__ = ["ConfusedExamples", "MapMetrics", "summarize"]


def _downsample(maps: Tensor, max_side: int) -> Tensor:
    height, width = maps.shape[-2:]
    scale = max_side / max(height, width)
    if scale >= 1:
        return maps
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.adaptive_avg_pool2d(maps[:, None], size)[:, 0]


def summarize(per_image: Mapping[str, Tensor]) -> dict[str, float]:
    """The median over probe images of each value (NaN images ignored; NaN if all are NaN)."""
    return {key: float(torch.nanmedian(values.float())) for key, values in per_image.items()}


class MapMetrics:
    """Per-image focus and drift values for each explained epoch.

    Args:
        border_fraction: width of the border band (as a fraction of the side) for the no-mask heuristic.
        max_side: maps are kept and compared at most at this resolution (area pooling).

    Example:
        >>> metrics = MapMetrics()
        >>> first = metrics.update("gradcam", torch.rand(3, 32, 32))
        >>> second = metrics.update("gradcam", torch.rand(3, 32, 32))
        >>> "drift/emd_prev" in second and "drift/emd_prev" not in first
        True
    """

    def __init__(self, border_fraction: float = 0.1, max_side: int = 64) -> None:
        self.border_fraction = border_fraction
        self.max_side = max_side
        self.first: dict[str, Tensor] = {}
        self.previous: dict[str, Tensor] = {}

    def update(
        self,
        method: str,
        maps: Tensor,
        masks: Mapping[str, Tensor] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """Values ``[N]`` keyed ``focus/<metric>`` and ``drift/<metric>``; remembers ``maps`` for next time.

        ``masks`` may hold ``"object"`` and ``"cue"`` masks ``[N, H, W]`` at the maps' resolution; ``grid`` is the
        layer grid a layer method's maps were upsampled from (see :func:`~lightning_explain.functional.focus_report`).
        """
        masks = masks or {}
        maps = maps.detach().float().cpu()
        out = {
            f"focus/{name}": values
            for name, values in focus_report(
                maps, masks.get("object"), masks.get("cue"), border_fraction=self.border_fraction, grid=grid
            ).items()
        }
        small = _downsample(maps, self.max_side)
        first, previous = self.first.get(method), self.previous.get(method)
        if first is not None and first.shape != small.shape:  # the probe changed: start a new history
            first = previous = None
        drift = drift_report(small, previous, first)
        out.update({f"drift/{name}": values for name, values in drift.items()})
        self.previous[method] = small
        if first is None:
            self.first[method] = small
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"first": dict(self.first), "previous": dict(self.previous)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.first = {k: v.cpu() for k, v in dict(state.get("first", {})).items()}
        self.previous = {k: v.cpu() for k, v in dict(state.get("previous", {})).items()}


@dataclass
class ConfusedExamples:
    """The wrong predictions with the highest confidence seen in one validation epoch, most confident first.

    ``indices`` count samples of the first validation dataloader in the order they were seen (the dataset index
    for a sequential sampler); ``confidence`` is the softmax probability of the (wrong) predicted class.

    Example:
        >>> seen = ConfusedExamples.empty()
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
        >>> batch = ConfusedExamples.from_batch(logits, torch.tensor([1, 1, 0]), torch.zeros(3, 1, 2, 2), 10, 8)
        >>> seen = seen.merge(batch, k=8)
        >>> seen.indices.tolist()
        [10, 12]
    """

    indices: Tensor
    confidence: Tensor
    labels: Tensor
    predictions: Tensor
    images: Tensor

    @classmethod
    def empty(cls) -> ConfusedExamples:
        none = torch.zeros(0, dtype=torch.long)
        return cls(none, torch.zeros(0), none, none, torch.zeros(0))

    @classmethod
    def from_batch(cls, logits: Tensor, labels: Tensor, images: Tensor, start: int, k: int) -> ConfusedExamples:
        """The ``k`` most confident wrong predictions of one batch whose first sample is number ``start``."""
        confidence, predictions = logits.detach().float().softmax(dim=1).max(dim=1)
        labels = labels.to(predictions.device)
        wrong = torch.nonzero(predictions != labels).flatten()
        best = wrong[confidence[wrong].argsort(descending=True, stable=True)[:k]]
        return cls(
            (best + start).cpu(),
            confidence[best].cpu(),
            labels[best].cpu(),
            predictions[best].cpu(),
            images[best.to(images.device)].detach().cpu().clone(),
        )

    def merge(self, other: ConfusedExamples, k: int) -> ConfusedExamples:
        """The ``k`` most confident of both."""
        if other.indices.numel() == 0:
            return self
        if self.indices.numel() == 0:
            both = other
        else:
            both = ConfusedExamples(
                *(torch.cat([a, b]) for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))
            )
        order = both.confidence.argsort(descending=True, stable=True)[:k]
        return ConfusedExamples(*(t[order] for t in both.as_tuple()))

    def __len__(self) -> int:
        return int(self.indices.numel())

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.indices, self.confidence, self.labels, self.predictions, self.images
