"""What :class:`~lightning_explain.ExplainCallback` does with the probe each explained epoch, without Lightning.

The callback decides *when* and *where*; this module says *what*, as plain functions:

1. :func:`split_method_options` splits ``method_options`` into each method's schedule and its own options;
2. :func:`due_groups` picks the methods due at an epoch, grouped by how many probe images they explain (one
   :func:`~lightning_explain.functional.explain` call per group), largest group first;
3. :func:`merge_results` joins the groups' :class:`~lightning_explain.functional.engine.ExplainResult`;
4. :func:`score_maps` turns the maps into per-image focus and drift values (through
   :class:`~lightning_explain.monitor.MapMetrics`);
5. :func:`render_probe`, :func:`view_maps` and :func:`view_grid` build one grid per view, :func:`layout_json`
   says where each probe image's row lies in each grid.

Example:
    >>> schedule, options = split_method_options(("gradcam", "smoothgrad"), {"smoothgrad": {"samples": 4}}, 1)
    >>> schedule
    {'gradcam': (1, None), 'smoothgrad': (1, 4)}
    >>> due_groups(("gradcam", "smoothgrad"), schedule, epoch=3, probe_size=16)
    [(None, ['gradcam']), (4, ['smoothgrad'])]
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain.capture import preserve_model_state
from lightning_explain.checks import check_int, is_int
from lightning_explain.functional import (
    EXPENSIVE_METHODS,
    LAYER_METHODS,
    METHOD_OPTIONS,
    canonical_methods,
    check_options,
)
from lightning_explain.functional.engine import PIXEL_METHODS, ExplainResult
from lightning_explain.functional.layouts import LAYOUTS
from lightning_explain.functional.target_layer import LayerChoice, locate_layer
from lightning_explain.functional.targets import OutputTransform, Targets
from lightning_explain.monitor import MapMetrics
from lightning_explain.probe import Probe
from lightning_explain.render import explanation_grid, grid_layout, to_display

__all__ = [
    "EXPENSIVE_MAX_IMAGES",
    "NO_LABELS_ERROR",
    "NO_VALIDATION_ERROR",
    "NO_VALIDATION_WARNING",
    "SCHEDULE_OPTIONS",
    "STRIP_IMAGES",
    "STRIP_VIEWS",
    "TARGET_MODES",
    "Schedule",
    "StageClock",
    "check_explain_arguments",
    "check_probe_masks",
    "due_groups",
    "layout_json",
    "merge_results",
    "probe_targets",
    "render_probe",
    "row_captions",
    "score_maps",
    "split_method_options",
    "view_grid",
    "view_maps",
    "views",
]

#: The targets modes besides a class index.
TARGET_MODES = ("predicted", "label")
#: Per-method schedule options, besides each method's own (``METHOD_OPTIONS``).
SCHEDULE_OPTIONS = frozenset({"every_n_epochs", "max_images"})
#: Probe images an expensive method explains unless ``method_options`` says otherwise.
EXPENSIVE_MAX_IMAGES = 4
#: Extra views of the ``attention`` method (one column per head / per layer) and their column captions.
STRIP_VIEWS = {"attention_heads": "head", "attention_layers": "layer"}
#: Probe images shown in those views.
STRIP_IMAGES = 4


class StageClock(dict[str, float]):
    """Seconds per stage of one explained epoch on the training thread, summed over each ``stage(name)`` block.

    Example:
        >>> clock = StageClock()
        >>> with clock.stage("maps"):
        ...     pass
        >>> list(clock)
        ['maps']
    """

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


#: Per method: ``(every_n_epochs, max_images or None)``.
Schedule = dict[str, tuple[int, int | None]]


def split_method_options(
    methods: tuple[str, ...], options: Mapping[str, Mapping[str, Any]] | None, every_n_epochs: int
) -> tuple[Schedule, dict[str, dict[str, Any]]]:
    """``method_options`` -> (schedule per method: (every_n_epochs, max_images or None), functional options)."""
    chosen = {canonical_methods(m)[0]: dict(o) for m, o in (options or {}).items()}
    stray = sorted(set(chosen) - set(methods))
    if stray:
        raise ValueError(f"method_options names {stray}, which are not in methods={list(methods)}.")
    schedule: Schedule = {}
    functional: dict[str, dict[str, Any]] = {}
    for method in methods:
        opts = chosen.get(method, {})
        own = METHOD_OPTIONS.get(method, frozenset())
        unknown = set(opts) - SCHEDULE_OPTIONS - own
        if unknown:
            allowed = sorted(SCHEDULE_OPTIONS | own)
            raise ValueError(f"method_options[{method!r}] has unknown keys {sorted(unknown)}; allowed: {allowed}.")
        every = opts.pop("every_n_epochs", every_n_epochs)
        limit = opts.pop("max_images", EXPENSIVE_MAX_IMAGES if method in EXPENSIVE_METHODS else None)
        for name, value in (("every_n_epochs", every), ("max_images", limit)):
            if value is not None:
                check_int(f"method_options[{method!r}][{name!r}]", value)
        schedule[method] = (every, limit)
        if opts:
            functional[method] = check_options({method: opts})[method]
    return schedule, functional


def due_groups(
    methods: Sequence[str], schedule: Schedule, epoch: int | None, probe_size: int
) -> list[tuple[int | None, list[str]]]:
    """The methods due at ``epoch`` (None: all, e.g. under ``validate()``), grouped by ``max_images``.

    Largest group first: its logits and targets give the captions of every grid.
    """
    groups: dict[int | None, list[str]] = {}
    for method in methods:
        every, limit = schedule[method]
        if epoch is None or epoch % every == 0:
            groups.setdefault(limit, []).append(method)
    return sorted(groups.items(), key=lambda kv: -(kv[0] or probe_size))


def check_explain_arguments(
    layer_layout: str | None,
    targets: str | int,
    border_fraction: float,
    probe: Tensor | None,
    probe_labels: Tensor | None,
    probe_masks: Mapping[str, Tensor | None],
) -> None:
    """ExplainCallback's own argument checks (those ViewCallback does not make), each error with its fix."""
    if layer_layout is not None and layer_layout not in LAYOUTS:
        raise ValueError(f"layer_layout must be one of {list(LAYOUTS)} or None; got {layer_layout!r}.")
    if not is_int(targets, minimum=0) and targets not in TARGET_MODES:
        raise ValueError(f"targets must be 'predicted', 'label' or a class index >= 0; got {targets!r}.")
    if targets == "label" and probe is not None and probe_labels is None:
        raise ValueError("targets='label' needs labels: pass probe_labels with the probe.")
    if not 0.0 < border_fraction < 0.5:
        raise ValueError(f"border_fraction must lie in (0, 0.5); got {border_fraction}.")
    if probe is None and any(m is not None for m in probe_masks.values()):
        raise ValueError(
            "probe_object_masks / probe_cue_masks go with an explicit probe=...; for validation data use "
            "object_mask_key / cue_mask_key."
        )


def check_probe_masks(probe: Probe) -> None:
    """Each mask of the probe is ``[N, H, W]``, the size of the probe images."""
    size = tuple(probe.images.shape[-2:])
    for name, mask in probe.masks.items():
        if tuple(mask.shape) != (len(probe), *size):
            raise ValueError(
                f"the probe's {name} masks have shape {list(mask.shape)}; they must be [N, H, W] = "
                f"{[len(probe), *size]}, the size of the probe images."
            )


def probe_targets(mode: str | int, probe: Probe, limit: int | None, device: torch.device) -> Targets:
    """What :func:`~lightning_explain.functional.explain` explains: None (predicted), the labels, or a class."""
    if mode == "predicted":
        return None
    if mode == "label":
        assert probe.labels is not None
        return probe.labels[:limit].to(device)
    assert isinstance(mode, int), mode
    return mode


def merge_results(results: Sequence[ExplainResult]) -> ExplainResult:
    """One result from the groups' results, largest group first: each field from the first result that has it."""
    maps: dict[str, Tensor] = {}
    for result in results:
        for method, value in result.maps.items():
            maps.setdefault(method, value)

    def first(name: str) -> Tensor | None:
        return next((getattr(r, name) for r in results if getattr(r, name) is not None), None)

    return ExplainResult(
        maps,
        results[0].logits,
        results[0].targets,
        activation_channels=first("activation_channels"),
        attention_heads=first("attention_heads"),
        attention_layers=first("attention_layers"),
        predicted=first("predicted"),
    )


def score_maps(
    metrics: MapMetrics, result: ExplainResult, methods: Sequence[str], masks: Mapping[str, Tensor], prefix: str
) -> tuple[dict[str, Tensor], list[str]]:
    """Per-image focus and drift values of every single-map method, keyed by logged tag; and those methods."""
    per_image: dict[str, Tensor] = {}
    scored = [m for m in methods if m != "activations"]
    for method in scored:
        n = result[method].shape[0]
        values = metrics.update(method, result[method], {name: mask[:n] for name, mask in masks.items()})
        per_image.update({f"{prefix}/{method}/{name}": v for name, v in values.items()})
    return per_image, scored


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


def predictions_of(result: ExplainResult) -> list[int]:
    """The predicted class per image of ``result`` (the class covering most pixels for a dense output)."""
    predicted = result.predicted if result.predicted is not None else result.logits.argmax(dim=1)
    return [int(p) for p in predicted.tolist()]


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
    """One view's grid (see :func:`~lightning_explain.render.explanation_grid`), with its column captions."""
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
    cells with it), with ``extras`` (the dashboard's captions and per-image numbers) as further keys."""
    layouts = {tag: grid_layout(grid.shape[-2:], image_size, cell_size) for tag, grid in grids.items()}
    return json.dumps(
        {
            "epoch": epoch,
            "step": step,
            "grids": {tag: dataclasses.asdict(lay) for tag, lay in layouts.items() if lay is not None},
            **(extras or {}),
        }
    )


def flat_layer_maps(result: ExplainResult) -> list[str]:
    """The layer methods of ``result`` whose map is flat (constant, so all zeros once normalised) or not finite for
    every image: the score does not depend on that layer yet, or the CAM's ReLU removed all of it."""
    flat = []
    for method, maps in result.maps.items():
        if method in LAYER_METHODS and method != "activations":
            cells = maps.flatten(1)
            bad = ~torch.isfinite(cells).all(dim=1) | (cells.amax(dim=1) - cells.amin(dim=1) <= 0)
            if bool(bad.all()):
                flat.append(method)
    return flat


def integer_skips(methods: Sequence[str], images: Tensor) -> tuple[tuple[str, ...], str | None]:
    """For integer (``uint8``) probe images: the methods that can still run, and why the others are skipped."""
    if images.is_floating_point():
        return tuple(methods), None
    skipped = [m for m in methods if m in PIXEL_METHODS]
    kept = tuple(m for m in methods if m not in PIXEL_METHODS)
    if not skipped:
        return kept, None
    return kept, (
        f"the probe images have dtype {images.dtype} (the model converts them itself), so {skipped} are skipped: "
        "they differentiate or perturb the image itself and need floating-point images. The layer and attention "
        "methods run on the images as given. Convert the images in the dataset transform to get the others."
    )


#: ExplainCallback without validation data: with no probe (an error), with a probe (a warning).
NO_VALIDATION_ERROR = (
    "ExplainCallback found no validation data and no probe: it explains a probe batch at the end of each validation "
    "epoch. Give the Trainer validation data (a validation_step and val_dataloaders=... or a val_dataloader() hook, "
    "limit_val_batches > 0)."
)
NO_LABELS_ERROR = (
    "targets='label' but the validation batches carry no class labels ([B] integers). Use targets='predicted', "
    "label_key=... for dict batches, or unpack_batch=<callable>."
)
NO_VALIDATION_WARNING = (
    "ExplainCallback runs at the end of validation epochs, but this fit has no validation loop (no validation_step, "
    "no val data, or limit_val_batches=0): it will log nothing."
)


def nonfinite_warning(view: str, bad: Sequence[int], epoch: int) -> str:
    """The one warning for maps that hold NaN or inf."""
    return (
        f"ExplainCallback: the {view} map of probe images {list(bad)} holds NaN or inf at epoch {epoch} (diverging "
        "weights or an overflow); those cells are shown blank and training continues."
    )


def flat_warning(flat: Sequence[str], layer: LayerChoice, epoch: int) -> str:
    """The one warning for maps that stay flat: which, where, why it happens and what to try."""
    return (
        f"ExplainCallback: the {list(flat)} maps are flat or not finite for every probe image at epoch {epoch} on "
        f"layer {layer.describe()}. The score does not depend on that layer's output yet (a zero-initialised "
        "branch, a class-token read-out) or the CAM's ReLU removes it all. If it stays flat, pass "
        "target_layer=<a later block: after the residual add, before global pooling>."
    )


def find_layer(
    model: nn.Module, probe: Probe, targets: str | int, device: torch.device, output_transform: OutputTransform
) -> LayerChoice:
    """:func:`~lightning_explain.functional.locate_layer` on the first two probe images, the model's state kept."""
    with preserve_model_state(model):
        chosen = probe_targets(targets, probe, 2, device)
        return locate_layer(model, probe.images[:2].to(device), chosen, output_transform=output_transform)
