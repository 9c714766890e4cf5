"""One grid per view of an epoch: the probe as display images, row captions, the grids, and their layout.

:func:`render_probe`, :func:`view_maps` and :func:`view_grid` build one grid per view; :func:`layout_json` says where
each probe image's row lies in each grid (the HTML report and the dashboard cut cells with it).

Example:
    >>> row_captions([1, 0], [1, 1], lambda k: ["cat", "dog"][k])
    ['#0 y=dog p=dog', '#1 y=dog p=cat']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_explain.epoch.maps import predictions_of
from lightning_explain.epoch.probe import Probe
from lightning_explain.functional.engine import ExplainResult
from lightning_explain.output.render import explanation_grid, grid_layout, to_display

__all__ = [
    "STRIP_IMAGES",
    "STRIP_VIEWS",
    "layout_json",
    "render_probe",
    "row_captions",
    "view_grid",
    "view_maps",
    "views",
]

#: Extra views of the ``attention`` method (one column per head / per layer) and their column captions.
STRIP_VIEWS = {"attention_heads": "head", "attention_layers": "layer"}
#: Probe images shown in those views.
STRIP_IMAGES = 4


def row_captions(
    predictions: Sequence[int],
    labels: Sequence[int] | None,
    class_name: Callable[[int], str],
    explained: Sequence[int] | None = None,
) -> list[str]:
    """``"#i y=<label> p=<prediction>"`` per explained probe image (no ``y=`` without labels), and ``" map=<class>"``
    where the maps explain another class than the prediction (``targets="label"`` or a class index).

    Example:
        >>> row_captions([1, 0], [1, 1], lambda k: ["cat", "dog"][k])
        ['#0 y=dog p=dog', '#1 y=dog p=cat']
        >>> row_captions([1, 0], None, lambda k: ["cat", "dog"][k], explained=[1, 1])
        ['#0 p=dog', '#1 p=cat map=dog']
    """
    truth: Sequence[int | None] = labels[: len(predictions)] if labels is not None else [None] * len(predictions)
    targets = list(explained[: len(predictions)]) if explained is not None else list(predictions)
    return [
        f"#{i} "
        + (f"y={class_name(y)} " if y is not None else "")
        + f"p={class_name(p)}"
        + (f" map={class_name(t)}" if 0 <= t != p else "")
        for i, (y, p, t) in enumerate(zip(truth, predictions, targets, strict=True))
    ]


def render_probe(
    probe: Probe,
    result: ExplainResult,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    class_name: Callable[[int], str],
) -> tuple[Tensor, list[str]]:
    """The probe as display images on the result's device, and each row's caption (it names the class explained
    when that is not the prediction)."""
    display = to_display(probe.images.to(result.logits.device), mean, std)
    labels = probe.labels.tolist() if probe.labels is not None else None
    return display, row_captions(predictions_of(result), labels, class_name, result.targets.tolist())


def views(methods: Sequence[str], result: ExplainResult) -> list[str]:
    """The grids of one epoch: each method with a map, then the attention strips the result holds."""
    return [m for m in methods if m in result] + [v for v in STRIP_VIEWS if getattr(result, v) is not None]


def view_maps(result: ExplainResult, view: str) -> Tensor:
    """The maps a view's grid shows: a method's map, or an attention strip of the first ``STRIP_IMAGES`` images."""
    if view in STRIP_VIEWS:
        strip: Tensor | None = getattr(result, view)
        assert strip is not None
        return strip[:STRIP_IMAGES]
    return result[view]


def view_grid(
    view: str,
    maps: Tensor,
    display: Tensor,
    rows: Sequence[str],
    result: ExplainResult,
    *,
    alpha: float,
    colormap: str,
    cell_size: int,
) -> Tensor:
    """One view's grid (see :func:`~lightning_explain.output.render.explanation_grid`), with its column captions."""
    n = maps.shape[0]
    columns = None
    if view == "activations" and result.activation_channels is not None:
        columns = [[f"ch {c}" for c in row] for row in result.activation_channels.tolist()]
    elif view in STRIP_VIEWS:
        columns = [[f"{STRIP_VIEWS[view]} {j}" for j in range(maps.shape[1])]] * n
    return explanation_grid(
        display[:n], maps, rows[:n], column_captions=columns, alpha=alpha, colormap=colormap, cell_size=cell_size
    )


def layout_json(
    grids: Mapping[str, Tensor],
    image_size: Sequence[int],
    cell_size: int,
    epoch: int,
    step: int,
    extras: Mapping[str, Any] | None = None,
) -> str:
    """JSON that says where each probe image's row lies in each grid (the HTML report and the Explain dashboard cut
    cells with it), with ``extras`` (the dashboard's captions and per-image numbers) as further keys.

    One line indented by four spaces: still JSON to every reader, and a code block to the Markdown of TensorBoard's
    Text tab, which shows it as text (class names in the captions, such as ``<img src=x onerror=...>``, would
    otherwise be rendered there as HTML, through TensorBoard's sanitiser).
    """
    layouts = {tag: grid_layout(grid.shape[-2:], image_size, cell_size) for tag, grid in grids.items()}
    return "    " + json.dumps(
        {
            "epoch": epoch,
            "step": step,
            "grids": {tag: dataclasses.asdict(lay) for tag, lay in layouts.items() if lay is not None},
            **(extras or {}),
        }
    )
