"""One table of charts: TensorBoard's Custom Scalars and the HTML report draw the same charts from it."""

from __future__ import annotations

import re

import torch

from lightning_explain.epoch.faithfulness_schedule import FAITHFULNESS_NAMES
from lightning_explain.epoch.trust_schedule import TRUST_NAMES
from lightning_explain.functional.metrics import drift_report, focus_report
from lightning_explain.output.charts import CHARTS, DRIFT_SUFFIXES, chart_of
from lightning_explain.output.sinks import scalar_layout
from lightning_explain.report.events import RunData
from lightning_explain.report.page import chart_series

# Every metric that ExplainCallback logs under {prefix}/{method}/ (its docstring's "Logged metrics").
FOCUS = (
    "border_energy", "border_area", "border_lift", "spread",
    "energy_in_object", "object_area", "lift", "mask_auc", "pointing_game",
    "energy_in_cue", "cue_area", "cue_lift",
)  # fmt: skip
DRIFT = tuple(f"{m}_{s}" for m in ("emd", "com_shift", "topk_iou", "spearman") for s in ("prev", "first", "chance"))
FAITHFULNESS = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_gap")
TRUST = (
    "mprt_spearman_top", "mprt_spearman", "mprt_ssim", "random_logit_spearman", "random_logit_ssim",
    "max_sensitivity", "avg_sensitivity", "sparseness", "complexity", "faithfulness_correlation",
)  # fmt: skip
LOGGED = [("focus", n) for n in FOCUS] + [("drift", n) for n in DRIFT] + [("faithfulness", n) for n in FAITHFULNESS]
LOGGED += [("trust", n) for n in TRUST]
METHODS = ("gradcam", "saliency")


def test_the_listed_metrics_are_what_the_metric_functions_compute():
    maps, masks = torch.rand(3, 16, 16), torch.rand(3, 16, 16) > 0.5
    assert set(focus_report(maps, masks, masks)) == set(FOCUS)
    assert set(drift_report(maps, maps.flip(1), maps)) == set(DRIFT)
    assert DRIFT_SUFFIXES == ("prev", "first", "chance")
    assert FAITHFULNESS_NAMES == FAITHFULNESS  # what Faithfulness.score logs (checked in test_faithfulness.py)
    assert tuple(n for names in TRUST_NAMES.values() for n in names) == TRUST  # what Trust.score logs


def test_every_logged_metric_is_in_exactly_one_chart_of_the_table():
    for kind, name in LOGGED:
        assert sum(name in chart.names for chart in CHARTS if chart.kind == kind) == 1, name
        assert chart_of(kind, name) is not None
    assert {(chart.kind, name) for chart in CHARTS for name in chart.names} == set(LOGGED)  # and nothing else


def _tensorboard_charts(method: str) -> dict[str, set[tuple[str, str]]]:
    """Chart title (without the method) -> the logged ``(kind, name)`` of ``method`` that its regex selects."""
    layout = scalar_layout("explain", METHODS)["lightning_explain"]
    assert list(layout) == [f"{m}: {chart.title}" for m in METHODS for chart in CHARTS]
    out = {}
    for title, (kind, patterns) in layout.items():
        assert kind == "Multiline" and len(patterns) == 1
        shown = {(k, n) for k, n in LOGGED if re.search(patterns[0], f"explain/{method}/{k}/{n}")}
        if title.startswith(f"{method}: "):
            out[title.removeprefix(f"{method}: ")] = shown
        else:
            assert not shown, title  # another method's chart takes none of this method's tags
    return out


def _report_charts(method: str) -> dict[str, set[tuple[str, str]]]:
    """Chart title -> the ``(kind, name)`` series the report draws for ``method`` when every metric was logged."""
    points = [(0, 0.5), (1, 0.25)]
    run = RunData("run", scalars={f"explain/{m}/{k}/{n}": points for m in METHODS for k, n in LOGGED})
    charts = chart_series(run, f"explain/{method}")
    kinds = {chart.title: chart.kind for chart in CHARTS}
    return {title: {(kinds[title], name) for name in series} for title, series in charts}


def test_tensorboard_and_the_report_draw_the_same_charts_from_the_table():
    for method in METHODS:
        tensorboard, report = _tensorboard_charts(method), _report_charts(method)
        expected = {chart.title: {(chart.kind, name) for name in chart.names} for chart in CHARTS}
        assert list(tensorboard) == list(report) == [chart.title for chart in CHARTS]  # same charts, same order
        assert tensorboard == report == expected  # same metrics in each
        assert set().union(*tensorboard.values()) == set(LOGGED)  # every logged metric is in a chart of both
