"""An epoch's maps: what is explained, the groups' results joined, the focus and drift values, the flat maps.

:func:`probe_targets` says what :func:`~lightning_explain.functional.explain` explains, :func:`merge_results`
joins the groups' :class:`~lightning_explain.functional.engine.ExplainResult`, :func:`score_maps` turns the maps into
per-image focus and drift values (through :class:`~lightning_explain.epoch.history.MapMetrics`),
:func:`flat_layer_maps` finds the layer maps that say nothing yet, :func:`find_layer` picks the default layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_explain.capture import preserve_model_state
from lightning_explain.epoch.history import MapMetrics
from lightning_explain.epoch.probe import Probe
from lightning_explain.functional import LAYER_METHODS
from lightning_explain.functional.engine import PIXEL_METHODS, ExplainResult
from lightning_explain.functional.target_layer import LayerChoice, locate_layer
from lightning_explain.functional.targets import OutputTransform, Targets

__all__ = [
    "TARGET_MODES",
    "find_layer",
    "flat_layer_maps",
    "integer_skips",
    "merge_results",
    "predictions_of",
    "probe_targets",
    "score_maps",
]

#: The targets modes besides a class index.
TARGET_MODES = ("predicted", "label")


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
        layer=next((r.layer for r in results if r.layer is not None), None),
        layout=next((r.layout for r in results if r.layout is not None), None),
    )


def score_maps(
    metrics: MapMetrics, result: ExplainResult, methods: Sequence[str], masks: Mapping[str, Tensor], prefix: str
) -> tuple[dict[str, Tensor], list[str]]:
    """Per-image focus and drift values of every single-map method, keyed by logged tag; and those methods."""
    per_image: dict[str, Tensor] = {}
    scored = [m for m in methods if m != "activations"]
    layer_grid = result.layout.grid if result.layout is not None else None
    for method in scored:
        n = result[method].shape[0]
        grid = layer_grid if method in LAYER_METHODS else None
        values = metrics.update(method, result[method], {name: mask[:n] for name, mask in masks.items()}, grid)
        per_image.update({f"{prefix}/{method}/{name}": v for name, v in values.items()})
    return per_image, scored


def predictions_of(result: ExplainResult) -> list[int]:
    """The predicted class per image of ``result`` (the class covering most pixels for a dense output)."""
    predicted = result.predicted if result.predicted is not None else result.logits.argmax(dim=1)
    return [int(p) for p in predicted.tolist()]


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


def find_layer(
    model: nn.Module, probe: Probe, targets: str | int, device: torch.device, output_transform: OutputTransform
) -> LayerChoice:
    """:func:`~lightning_explain.functional.locate_layer` on the first two probe images, the model's state kept."""
    with preserve_model_state(model):
        chosen = probe_targets(targets, probe, 2, device)
        return locate_layer(model, probe.images[:2].to(device), chosen, output_transform=output_transform)
