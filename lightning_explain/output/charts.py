"""Which metric goes in which chart: one table for TensorBoard's custom scalars and the HTML report.

:class:`~lightning_explain.ExplainCallback` logs each single-map method's numbers as
``{tag_prefix}/{method}/drift/{metric}_{prev,first,chance}``, ``{tag_prefix}/{method}/focus/{metric}``,
``{tag_prefix}/{method}/faithfulness/{metric}`` and ``{tag_prefix}/{method}/trust/{metric}``. :data:`CHARTS` groups
them into ten charts per method;
:func:`lightning_explain.output.sinks.scalar_layout` (the "Custom Scalars" tab) and the HTML report
(:mod:`lightning_explain.report`) both draw exactly these charts, in this order. Pure Python: no torch, no Lightning.

Example:
    >>> [chart.title for chart in CHARTS]  # doctest: +NORMALIZE_WHITESPACE
    ['drift: distance (image sides)', 'drift: similarity', 'focus on the object', 'focus on the cue and the border',
     'faithfulness: deletion and insertion AUC', 'faithfulness: ROAD',
     'trust: randomisation similarity (low: the map follows the model)',
     'trust: sensitivity to input noise (low: robust)', 'trust: sparseness and faithfulness correlation',
     'trust: complexity (entropy, nats)']
    >>> chart_of("drift", "topk_iou_first").title
    'drift: similarity'
    >>> chart_of("focus", "no_such_metric") is None
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["CHARTS", "DRIFT_SUFFIXES", "Chart", "chart_of"]

#: The suffixes of each drift metric: against the previous and the first explained epoch, and the chance level.
DRIFT_SUFFIXES = ("prev", "first", "chance")


@dataclass(frozen=True)
class Chart:
    """One chart: its title, the scalar folder it reads (``drift``, ``focus``, ``faithfulness``, ``trust``) and its
    metrics.

    A drift metric ``emd`` stands for its three logged series ``emd_prev``, ``emd_first`` and ``emd_chance``.
    """

    title: str
    kind: Literal["drift", "focus", "faithfulness", "trust"]
    metrics: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The logged names under ``{prefix}/{method}/{kind}/`` that this chart shows."""
        if self.kind != "drift":
            return self.metrics
        return tuple(f"{metric}_{suffix}" for metric in self.metrics for suffix in DRIFT_SUFFIXES)

    def pattern(self, base: str) -> str:
        """A regular expression for the full tags of this chart under ``base`` (``{prefix}/{method}``).

        Example:
            >>> Chart("t", "focus", ("lift", "mask_auc")).pattern("explain/gradcam")
            '^explain/gradcam/focus/(lift|mask_auc)$'
        """
        return f"^{re.escape(base)}/{self.kind}/({'|'.join(self.names)})$"


CHARTS: tuple[Chart, ...] = (
    Chart("drift: distance (image sides)", "drift", ("emd", "com_shift")),
    Chart("drift: similarity", "drift", ("topk_iou", "spearman")),
    Chart("focus on the object", "focus", ("energy_in_object", "object_area", "lift", "mask_auc", "pointing_game")),
    Chart(
        "focus on the cue and the border",
        "focus",
        ("energy_in_cue", "cue_area", "cue_lift", "border_energy", "border_area", "border_lift", "spread"),
    ),
    Chart("faithfulness: deletion and insertion AUC", "faithfulness", ("deletion_auc", "insertion_auc")),
    Chart("faithfulness: ROAD", "faithfulness", ("road_morf", "road_lerf", "road_gap")),
    Chart(
        "trust: randomisation similarity (low: the map follows the model)",
        "trust",
        ("mprt_spearman_top", "mprt_spearman", "mprt_ssim", "random_logit_spearman", "random_logit_ssim"),
    ),
    Chart("trust: sensitivity to input noise (low: robust)", "trust", ("max_sensitivity", "avg_sensitivity")),
    Chart("trust: sparseness and faithfulness correlation", "trust", ("sparseness", "faithfulness_correlation")),
    Chart("trust: complexity (entropy, nats)", "trust", ("complexity",)),
)


def chart_of(kind: str, name: str) -> Chart | None:
    """The chart of :data:`CHARTS` that shows the series ``name`` logged under ``kind``, or None."""
    return next((chart for chart in CHARTS if chart.kind == kind and name in chart.names), None)
