"""Which layer is explained when the user names none: found by running the model, not by registration order.

:func:`locate_layer` runs two passes over (at most) two images:

1. a no-grad pass with a hook on every module, recording in the order the calls finish each output's shape; each
   output that reads as a spatial map (:mod:`~lightning_explain.functional.layouts`) on a grid larger than 1 x 1 is
   a candidate. Modules inside a block whose own output is a candidate (a conv inside a residual branch, an
   attention's projections) are not: the block's output, after the residual add, is what the model passes on.
   Anything after global pooling has a 1 x 1 grid and drops out;
2. one hooked pass over the last candidates with ``autograd.grad``: the layer is the last candidate whose output
   the explained score depends on (a non-zero gradient). A ViT that reads only its class token gives its last
   block's patch tokens a zero gradient, so the choice moves to the block before.

A recognised Vision Transformer (:func:`~lightning_explain.functional.vit_layouts.vit_layout`) keeps its known
choice (:func:`~lightning_explain.functional.vit_layouts.default_token_layer`). No Lightning import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_explain.capture import (
    ModuleCall,
    default_conv_layer,
    resolve_layer,
)
from lightning_explain.functional.context import as_model_input, check_inputs
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.layouts import (
    FeatureLayout,
    LayoutError,
    grid_pyramid,
    infer_layout,
    settle_layout,
    shape_pass,
)
from lightning_explain.functional.targets import OutputTransform, Targets
from lightning_explain.functional.vit_layouts import default_token_layer, find_vit_layout

__all__ = ["FINE_GRID", "LayerChoice", "default_layer", "locate_layer"]

#: How many of the last candidates the gradient pass checks.
CANDIDATES_CHECKED = 6
#: A grid with a side under this many cells is coarse (:attr:`LayerChoice.coarse`).
FINE_GRID = 4
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerChoice:
    """The layer :func:`locate_layer` chose, how its output is laid out, and why.

    Attributes:
        name: dotted module name.
        layout: how its output reads as ``[B, C, H, W]``.
        reason: one sentence for the console and the logs.
        finer: when this layer's grid is coarse (a side under :data:`FINE_GRID` cells), the last earlier block with
            a finer grid, to suggest; None otherwise.
    """

    name: str
    layout: FeatureLayout
    reason: str
    finer: LayerChoice | None = None

    @property
    def coarse(self) -> bool:
        """Whether a side of the layer's grid has fewer than :data:`FINE_GRID` cells (every map a few blobs)."""
        return min(self.layout.grid) < FINE_GRID

    def describe(self) -> str:
        """E.g. ``"'layer4.1' (nchw [B, C, 2, 2]): the last block ..."``."""
        return f"{self.name!r} ({self.layout.describe()}): {self.reason}"


def default_layer(model: nn.Module) -> str:
    """The structural default without running the model: a recognised ViT's token layer, else the last ``Conv2d``.

    :func:`locate_layer`, which runs the model, is what ``explain(layer=None)`` and the callbacks use.

    Example:
        >>> import torchvision
        >>> default_layer(torchvision.models.resnet18())
        'layer4.1.conv2'
    """
    layout = find_vit_layout(model)
    return default_token_layer(model, layout) if layout is not None else default_conv_layer(model)[0]


def _candidates(
    calls: list[ModuleCall], grids: frozenset[tuple[int, int]], prefix: tuple[int, int] | None
) -> list[tuple[ModuleCall, FeatureLayout]]:
    """Modules whose (last) output is a spatial map with more than one cell, in the order their calls finish."""
    last = {call.name: (index, call) for index, call in enumerate(calls)}
    found: list[tuple[ModuleCall, FeatureLayout]] = []
    for _, call in sorted(last.values(), key=lambda item: item[0]):
        if call.shape is None:
            continue
        tokens = prefix[1] if prefix is not None and len(call.shape) == 3 and call.shape[1] == prefix[0] else None
        try:
            layout = settle_layout(call.shape, grids, calls, call.name, module=call.module, prefix_tokens=tokens)
        except LayoutError:
            continue
        if layout.grid[0] * layout.grid[1] > 1:
            found.append((call, layout))
    names = {call.name: call.module for call, _ in found}
    modules = {call.name: call.module for call in calls}

    def inside_block(name: str) -> bool:
        parent = name.rpartition(".")[0]
        if isinstance(modules.get(parent), _CONTAINERS):
            return False  # a block of a stage: always a unit
        parts = name.split(".")
        ancestors = (".".join(parts[:k]) for k in range(1, len(parts)))
        return any(a in names and not isinstance(names[a], _CONTAINERS) for a in ancestors)

    return [(call, layout) for call, layout in found if not inside_block(call.name)]


def _innermost(units: list[tuple[ModuleCall, FeatureLayout]], index: int) -> int:
    """A container returns its last child's output: name that child when it is a block (``layer4.1``,
    ``features.12``), never a leaf inside it (an in-place activation would hand back the same object). An
    ``Identity`` (timm's ``norm_pre``) names what it passes on."""
    while index > 0:
        here, before = units[index][0], units[index - 1][0]
        child = before.name.startswith(here.name + ".") and "." not in before.name[len(here.name) + 1 :]
        same = before.output_id == here.output_id
        if not (
            isinstance(here.module, _CONTAINERS) and child and same and any(True for _ in before.module.children())
        ):
            break
        index -= 1
    return index


def locate_layer(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    output_transform: OutputTransform = None,
) -> LayerChoice:
    """The layer to explain when none is named: the last block or stage output that still has a spatial grid and
    that the explained score depends on (see the module's docstring). Runs at most two images.

    Raises:
        ValueError: no module of the model outputs a spatial map larger than 1 x 1.

    Example:
        >>> import torch, torchvision
        >>> choice = locate_layer(torchvision.models.resnet18(num_classes=4).eval(), torch.rand(2, 3, 64, 64))
        >>> choice.name, choice.layout.grid
        ('layer4.1', (2, 2))
    """
    inputs = check_inputs(inputs, integer_ok=True)[:2]
    if isinstance(targets, Tensor) and targets.numel() > 1:
        targets = targets.reshape(-1)[: inputs.shape[0]]
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    vit = find_vit_layout(model)
    calls, conv = shape_pass(model, as_model_input(inputs, model))
    grids = grid_pyramid(size, conv | ({vit.grid} if vit is not None else set()))
    units = _candidates(calls, grids, (vit.num_tokens, vit.num_prefix_tokens) if vit is not None else None)
    if vit is not None:
        name = default_token_layer(model, vit)
        shapes = [call.shape for call in calls if call.name == name and call.shape is not None]
        if shapes:
            layout = infer_layout(shapes[-1], grids, prefix_tokens=vit.num_prefix_tokens, name=repr(name))
            return LayerChoice(name, layout, "the token output of a late transformer block")
    if not units:
        raise ValueError(
            f"no module of {type(model).__name__} outputs a spatial map ([B, C, H, W], [B, H, W, C] or [B, T, C] "
            "tokens on a grid larger than 1 x 1) for these inputs. Pass target_layer='<dotted name>'."
        )
    checked = units[-CANDIDATES_CHECKED:]
    passed = hooked_pass(
        model,
        inputs,
        targets,
        layers=[resolve_layer(model, call.name) for call, _ in checked],
        grad_layer=True,
        output_transform=output_transform,
    )
    for index in range(len(checked) - 1, -1, -1):
        grad = checked[index][1].to_nchw(passed.layer_grads[index])
        if bool(torch.isfinite(grad).all()) and bool(grad.abs().amax() > 0):
            call, layout = checked[_innermost(checked, index)]
            late = "the last block" if index == len(checked) - 1 else "the last block the score depends on"
            return _with_finer(
                LayerChoice(call.name, layout, f"{late} with a spatial grid before global pooling"), units
            )
    call, layout = checked[_innermost(checked, len(checked) - 1)]
    return _with_finer(
        LayerChoice(call.name, layout, "the last block with a spatial grid (no gradient reaches any yet)"), units
    )


def _with_finer(choice: LayerChoice, units: list[tuple[ModuleCall, FeatureLayout]]) -> LayerChoice:
    """``choice`` with the last earlier block whose grid has at least :data:`FINE_GRID` cells a side, when its own
    grid is coarser."""
    if not choice.coarse:
        return choice
    for index in range(len(units) - 1, -1, -1):
        if min(units[index][1].grid) >= FINE_GRID:
            call, layout = units[_innermost(units, index)]
            finer = LayerChoice(call.name, layout, "the last block with at least a 4 x 4 grid")
            return LayerChoice(choice.name, choice.layout, choice.reason, finer)
    return choice
