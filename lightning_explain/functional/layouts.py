"""How a layer lays out its output, decided from the shape, the input's grid and the module, never by which axis
is largest.

A layer's output is read as a spatial map in one of three layouts:

- ``"nchw"``: ``[B, C, H, W]`` (convolutions, and the default of PyTorch);
- ``"nhwc"``: channels-last ``[B, H, W, C]`` (timm's Swin and other NHWC stages);
- ``"tokens"``: ``[B, T, C]`` with ``T = prefix + H * W``: a flattened grid after ``prefix`` class, distillation or
  register tokens (ViT, DeiT, DINOv2, BEiT), or none (Swin, PVT stages).

The grid ``(H, W)`` must be one the model actually produces: the input's grid divided by powers of two, or any
grid a ``Conv2d`` of the model outputs (a patch embedding of stride 14 gives 16 x 16 on 224 px), divided likewise.
When two readings fit (``[B, 7, 7, 7]``), the module decides (a convolution or batch norm is channels-first, a
``LayerNorm`` or ``Linear`` acts on the last axis); when it cannot, :class:`LayoutError` names the shape and the
argument that sets the layout. No Lightning import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_explain.capture import ModuleCall, record_conv_grids, record_outputs
from lightning_explain.functional.context import grad_context

__all__ = [
    "LAYOUTS",
    "FeatureLayout",
    "LayoutError",
    "LayoutName",
    "grid_pyramid",
    "infer_layout",
    "is_ambiguous",
    "preceding_layout",
    "settle_layout",
    "shape_pass",
]

LayoutName = Literal["nchw", "nhwc", "tokens"]
#: The layouts a layer's output can be read in (``layer_layout=`` of ``explain`` and ``ExplainCallback``).
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "tokens")
#: At most this many tokens before the patch tokens (class + distillation + up to 6 registers).
MAX_PREFIX_TOKENS = 8
_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d)
_LAST_AXIS = (nn.LayerNorm, nn.Linear)


class LayoutError(ValueError):
    """A layer's output cannot be read as a spatial map, or not unambiguously."""


@dataclass(frozen=True)
class FeatureLayout:
    """How to read one layer's output as ``[B, C, H, W]``.

    Attributes:
        kind: ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        grid: ``(H, W)``.
        prefix_tokens: tokens before the patch tokens (``"tokens"`` only).

    Example:
        >>> import torch
        >>> FeatureLayout("tokens", (2, 3), prefix_tokens=1).to_nchw(torch.rand(4, 7, 5)).shape
        torch.Size([4, 5, 2, 3])
    """

    kind: LayoutName
    grid: tuple[int, int]
    prefix_tokens: int = 0

    def to_nchw(self, output: Tensor) -> Tensor:
        """The layer's output (or its gradient) as ``[B, C, H, W]``: prefix tokens dropped, patches row-major."""
        if self.kind == "nchw":
            return output
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.prefix_tokens :, :]
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], *self.grid)

    def describe(self) -> str:
        """E.g. ``"tokens [B, 1+7x7, C]"`` or ``"nhwc [B, 7, 7, C]"``."""
        h, w = self.grid
        if self.kind == "tokens":
            prefix = f"{self.prefix_tokens}+" if self.prefix_tokens else ""
            return f"tokens [B, {prefix}{h}x{w}, C]"
        return f"nchw [B, C, {h}, {w}]" if self.kind == "nchw" else f"nhwc [B, {h}, {w}, C]"


def grid_pyramid(size: tuple[int, int], seeds: Iterable[tuple[int, int]] = ()) -> frozenset[tuple[int, int]]:
    """Every grid the model can produce: ``size`` and each seed grid, divided by 2, 4, 8, ... (floor and ceil).

    Example:
        >>> sorted(grid_pyramid((8, 6)))
        [(1, 1), (2, 1), (2, 2), (4, 3), (8, 6)]
    """
    grids: set[tuple[int, int]] = set()
    for h, w in (size, *seeds):
        level = {(int(h), int(w))}
        while level:
            grids |= level
            level = {
                (rh(a / 2), rw(b / 2))
                for a, b in level
                if a > 1 or b > 1
                for rh in (math.floor, math.ceil)
                for rw in (math.floor, math.ceil)
            }
            level = {(a, b) for a, b in level if a >= 1 and b >= 1} - grids
    return frozenset(grids)


def _token_grid(length: int, grids: frozenset[tuple[int, int]], prefix: int | None) -> tuple[tuple[int, int], int]:
    """The grid and prefix count of ``length`` tokens: the largest grid that leaves at most 8 prefix tokens."""
    fits = [(g, length - g[0] * g[1]) for g in grids if 0 <= length - g[0] * g[1] <= MAX_PREFIX_TOKENS]
    if prefix is not None:
        fits = [(g, p) for g, p in fits if p == prefix]
    if not fits:
        return (0, 0), -1
    fewest = min(p for _, p in fits)
    best = [g for g, p in fits if p == fewest]
    return (best[0], fewest) if len(best) == 1 else ((0, 0), -1)


def infer_layout(
    shape: Iterable[int],
    grids: frozenset[tuple[int, int]],
    *,
    module: nn.Module | None = None,
    name: str = "the layer",
    forced: str | None = None,
    prefix_tokens: int | None = None,
    preceding: str | None = None,
) -> FeatureLayout:
    """Decide how to read an output of ``shape`` as a spatial map.

    Args:
        shape: the output's shape (batch first).
        grids: the grids the model can produce (:func:`grid_pyramid`).
        module: the layer, to settle a shape that two layouts fit.
        name: the layer's name, for messages.
        forced: ``"nchw"``, ``"nhwc"`` or ``"tokens"`` from the user: only that reading is tried.
        prefix_tokens: the number of prefix tokens when known (a recognised ViT).
        preceding: the layout of the nearest earlier output that only one layout fits
            (:func:`preceding_layout`); settles a tie that the module does not.

    Raises:
        LayoutError: the shape fits no layout, or two and the module does not settle it (the message names the
            shape and ``layer_layout=``).

    Example:
        >>> grids = grid_pyramid((32, 32))
        >>> infer_layout((2, 64, 8, 8), grids).kind, infer_layout((2, 8, 8, 64), grids).kind
        ('nchw', 'nhwc')
        >>> infer_layout((2, 65, 64), grids).describe()
        'tokens [B, 1+8x8, C]'
    """
    dims = tuple(int(d) for d in shape)
    if forced is not None and forced not in LAYOUTS:
        raise LayoutError(f"layer_layout must be one of {list(LAYOUTS)} or None; got {forced!r}.")
    readings: list[FeatureLayout] = []
    if len(dims) == 4:
        if (dims[2], dims[3]) in grids:
            readings.append(FeatureLayout("nchw", (dims[2], dims[3])))
        if (dims[1], dims[2]) in grids:
            readings.append(FeatureLayout("nhwc", (dims[1], dims[2])))
    elif len(dims) == 3 and dims[2] > 1:  # [B, T, 1] is a pooled vector, not tokens
        grid, prefix = _token_grid(dims[1], grids, prefix_tokens)
        if prefix >= 0:
            readings.append(FeatureLayout("tokens", grid, prefix))
    if forced is not None:
        readings = [r for r in readings if r.kind == forced]
    if len(readings) > 1 and module is not None:
        settled = "nchw" if isinstance(module, _CHANNELS_FIRST) else "nhwc" if isinstance(module, _LAST_AXIS) else None
        readings = [r for r in readings if r.kind == settled] or readings
    if len(readings) > 1 and preceding is not None:
        readings = [r for r in readings if r.kind == preceding] or readings
    shape_text = list(dims)
    if len(readings) == 1:
        return readings[0]
    if readings:
        raise LayoutError(
            f"{name} outputs {shape_text}, which reads both as channels-first [B, C, H, W] and as channels-last "
            "[B, H, W, C]. Pass layer_layout='nchw' or layer_layout='nhwc'."
        )
    wanted = "nchw [B, C, H, W], nhwc [B, H, W, C] or tokens [B, T, C]" if forced is None else forced
    raise LayoutError(
        f"{name} outputs {shape_text}, which is not a spatial map ({wanted}) on a grid this model produces from "
        f"its input (grids {sorted(grids, reverse=True)[:6]}...). Choose a layer before global pooling, or pass "
        "layer_layout=... if the layout is one of those."
    )


def is_ambiguous(error: LayoutError) -> bool:
    """Whether ``error`` says that two layouts fit (rather than none)."""
    return "reads both as" in str(error)


def preceding_layout(calls: Sequence[ModuleCall], name: str, grids: frozenset[tuple[int, int]]) -> str | None:
    """The layout of the last 4-D output, finished before ``name``'s last call, whose layout is settled (one layout
    fits its shape, or its module decides: a convolution, a ``LayerNorm``).

    ``calls`` come from :func:`lightning_explain.capture.record_outputs`. A layout holds from one module to the next,
    so the nearest settled output says how an ambiguous one (``[B, 16, 16, 16]`` after a ReLU) is laid out.
    """
    ends = [i for i, call in enumerate(calls) if call.name == name]
    for call in reversed(calls[: ends[-1]] if ends else calls):
        if call.shape is None or len(call.shape) != 4:
            continue
        try:
            return infer_layout(call.shape, grids, module=call.module).kind
        except LayoutError:
            continue
    return None


def settle_layout(
    shape: Iterable[int],
    grids: frozenset[tuple[int, int]],
    calls: Sequence[ModuleCall],
    name: str,
    *,
    module: nn.Module | None = None,
    forced: str | None = None,
    prefix_tokens: int | None = None,
) -> FeatureLayout:
    """:func:`infer_layout` of the output of module ``name``; a shape that two layouts fit is settled by the layout
    of the outputs before it (:func:`preceding_layout`, from the ``calls`` of a :func:`shape_pass`)."""
    dims = tuple(int(d) for d in shape)
    read = partial(
        infer_layout,
        dims,
        grids,
        module=module,
        name=f"target_layer {name!r}",
        forced=forced,
        prefix_tokens=prefix_tokens,
    )
    try:
        return read()
    except LayoutError as err:
        if not is_ambiguous(err):
            raise
    return read(preceding=preceding_layout(calls, name, grids))


def shape_pass(model: nn.Module, inputs: Tensor) -> tuple[list[ModuleCall], frozenset[tuple[int, int]]]:
    """One no-grad forward of ``inputs`` (already the model's input) that records every module's output shape, in
    the order the calls finish, and the grid of every ``Conv2d`` output. Hooks are removed in ``finally``."""
    with grad_context(inputs.device), torch.no_grad(), record_outputs(model) as calls, record_conv_grids(model) as conv:
        model(inputs)
    return calls, frozenset(conv)
