"""Faithfulness of the maps on the probe, for :class:`~lightning_explain.ExplainCallback` (``faithfulness=...``).

:class:`Faithfulness` holds the options (validated once, in the callback's ``__init__``), says when it is due and
turns an epoch's maps into per-image values keyed by logged tag, through the pure functions of
:mod:`lightning_explain.functional.faithfulness` (deletion/insertion AUC, ROAD). No Lightning import.

Example:
    >>> spec = Faithfulness.from_option({"every_n_epochs": 2, "steps": 8})
    >>> spec.steps, spec.due(4), spec.due(5), Faithfulness.from_option(False)
    (8, True, False, None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain.epoch.checks import check_int
from lightning_explain.functional import canonical_methods
from lightning_explain.functional.engine import ExplainResult
from lightning_explain.functional.faithfulness import BASELINES, DEFAULT_PERCENTILES, deletion_insertion, road
from lightning_explain.functional.targets import OutputTransform

__all__ = ["FAITHFULNESS_NAMES", "Faithfulness"]

#: The values logged per method under ``{prefix}/{method}/faithfulness/``.
FAITHFULNESS_NAMES = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_gap")


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """What ``ExplainCallback(faithfulness=...)`` computes: deletion/insertion AUC and ROAD of each single-map method
    on the first ``max_images`` probe images, every ``every_n_epochs`` (see
    :mod:`~lightning_explain.functional.faithfulness`). The other fields are passed on to those functions."""

    every_n_epochs: int = 5
    max_images: int = 4
    methods: tuple[str, ...] | None = None
    steps: int = 16
    baseline: str = "mean"
    blur_sigma: float | None = None
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    batch_size: int = 64

    @classmethod
    def from_option(cls, option: bool | Mapping[str, Any]) -> Faithfulness | None:
        """None for ``False``; the defaults for ``True``; a dict overrides them (unknown keys raise)."""
        if option is False:
            return None
        given = {} if option is True else dict(option) if isinstance(option, Mapping) else {"": option}
        fields = [f.name for f in dataclasses.fields(cls)]
        if set(given) - set(fields):
            raise ValueError(f"faithfulness must be True, False or a dict with keys from {fields}; got {option!r}.")
        for key in ("methods", "percentiles"):
            if given.get(key) is not None:
                given[key] = tuple(canonical_methods(given[key]) if key == "methods" else given[key])
        spec = cls(**given)
        for name in ("every_n_epochs", "max_images", "steps", "batch_size"):
            check_int(f"faithfulness[{name!r}]", getattr(spec, name))
        if spec.baseline not in BASELINES:
            raise ValueError(f"faithfulness['baseline'] must be one of {BASELINES}; got {spec.baseline!r}.")
        if not spec.percentiles or not all(0 <= p < 100 for p in spec.percentiles):
            raise ValueError(f"faithfulness['percentiles'] must be percentages in [0, 100); got {spec.percentiles}.")
        return spec

    def due(self, epoch: int, fitting: bool = True) -> bool:
        """Whether it runs at ``epoch``: every ``every_n_epochs`` while fitting, always under ``validate()``."""
        return not fitting or epoch % self.every_n_epochs == 0

    def score(
        self, model: nn.Module, images: Tensor, result: ExplainResult, prefix: str, transform: OutputTransform
    ) -> dict[str, Tensor]:
        """Per-image values keyed by logged tag: ``{prefix}/{method}/faithfulness/{name}``."""
        methods = [m for m in (self.methods or result.maps) if m in result and result[m].dim() == 3]
        n = min([self.max_images, len(result.targets)] + [result[m].shape[0] for m in methods])
        x = images[:n].to(result.logits.device)
        if not x.is_floating_point():
            raise TypeError(f"faithfulness needs floating-point probe images; these have dtype {x.dtype}.")
        classes = result.targets[:n]
        options: dict[str, Any] = {"batch_size": self.batch_size, "output_transform": transform}
        out: dict[str, Tensor] = {}
        for method in methods:
            maps = result[method][:n]
            values = deletion_insertion(
                model, x, maps, classes.clamp_min(0), steps=self.steps, baseline=self.baseline,  # type: ignore[arg-type]
                blur_sigma=self.blur_sigma, **options,
            )  # fmt: skip
            morf, lerf = (
                road(model, x, maps, classes.clamp_min(0), percentiles=self.percentiles, order=o, **options).mean(1)
                for o in ("morf", "lerf")
            )
            values.update(road_morf=morf, road_lerf=lerf, road_gap=lerf - morf)
            for name, value in values.items():  # NaN where a targets callable chose the score (no class)
                out[f"{prefix}/{method}/faithfulness/{name}"] = torch.where(classes >= 0, value, float("nan"))
        return out
