"""Attention maps in bounded memory: fold each layer's attention into running results as the pass produces it.

:func:`~lightning_explain.functional.rollout.attention_rollout` and
:func:`~lightning_explain.functional.rollout.grad_rollout` take every layer's ``[B, heads, T, T]`` attention (and
gradient) at once: ``O(layers x heads x B x T^2)`` held together. :class:`AttentionFold` is handed to
:func:`~lightning_explain.capture.capture_attention` as ``on_layer`` and keeps only what the maps need:

- the class-token row of every head of every layer, ``[B, heads, T]`` per layer (``O(layers x heads x B x T)``):
  the ``attention`` map, the head grid and the layer strip read nothing else;
- rollout's running product ``R <- A'_l R`` (one ``[B, T, T]``), updated in depth order as each layer runs, with the
  same operations in the same order as :func:`attention_rollout` (equal to it bit for bit);
- gradient-weighted rollout as one row vector ``[B, T]``. Chefer's rule ``R <- R + W_l R`` (``R_0 = I``, depth
  order) gives ``R_L = (I + W_L) ... (I + W_1)``, and the map reads only its class-token row
  ``e_0^T (I + W_L) ... (I + W_1)``. Multiplied out from the left, that row needs the layers in REVERSE depth order:
  ``v <- v + v W_l`` for ``l = L ... 1`` starting from ``v = e_0`` -- the order in which the backward pass delivers
  the gradients. A tensor hook on each layer's attention folds ``W_l = mean_heads(ReLU(dS/dA_l * A_l))`` into ``v``
  as its gradient arrives, and the gradient is dropped at once. The pass differentiates with respect to the input
  images (every layer's attention lies between them and the score), or, for integer images, the first layer's
  attention (:attr:`AttentionFold.first`). A gradient that arrives early (not in reverse depth order) waits in a
  queue until the layers after it have been folded; a layer whose gradient never arrives (the score does not depend
  on it) contributes ``W_l = 0``, as the zero-filled gradient does in :func:`grad_rollout`
  (:meth:`AttentionFold.finish` folds what still waits). Equal to :func:`grad_rollout` up to float rounding (the
  products are associated the other way).

No Lightning import; the fold holds no hooks on the model (the tensor hooks die with the pass's graph and are
removed by :meth:`AttentionFold.finish`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from lightning_explain.functional.rollout import (
    HEAD_FUSIONS,
    check_attention,
    relevance_weights,
    rollout_layer,
)
from lightning_explain.functional.vit_layouts import ViTLayout

__all__ = ["AttentionFold"]


class AttentionFold:
    """Running attention results of one pass; call it with each layer's attention in depth order.

    Args:
        layout: the model's :class:`~lightning_explain.functional.vit_layouts.ViTLayout`.
        class_rows: keep each layer's class-token row per head (for ``attention``, the head grid, the layer strip).
        rollout: options of :func:`attention_rollout` (``head_fusion``, ``discard_ratio``) to accumulate the
            rollout, or None for no rollout.
        grad_rollout: fold gradient-weighted rollout in the backward (the pass differentiates with respect to the
            images, or to :attr:`first`, then calls :meth:`finish`).

    Example:
        >>> import torch, torchvision
        >>> from lightning_explain.capture import capture_attention
        >>> from lightning_explain.functional.vit_layouts import vit_layout
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32).eval()
        >>> fold = AttentionFold(vit_layout(model), class_rows=True, rollout={})
        >>> with torch.no_grad(), capture_attention(model, on_layer=fold):
        ...     _ = model(torch.rand(2, 3, 32, 32))
        >>> fold.count, fold.rollout_map().shape, fold.head_maps(-1).shape
        (2, torch.Size([2, 4, 4]), torch.Size([2, 2, 4, 4]))
    """

    def __init__(
        self,
        layout: ViTLayout,
        *,
        class_rows: bool = False,
        rollout: Mapping[str, Any] | None = None,
        grad_rollout: bool = False,
    ) -> None:
        if not layout.has_class_token:
            raise ValueError("the model has no class token; attention maps and rollout read the class-token row.")
        self.layout = layout
        self.keep_class_rows = class_rows
        self.grad_rollout = grad_rollout
        self._head_fusion = "mean"
        self._discard_ratio = 0.0
        if rollout is not None:
            unknown = set(rollout) - {"head_fusion", "discard_ratio"}
            if unknown:
                raise ValueError(f"unknown rollout options {sorted(unknown)}; known: ['discard_ratio', 'head_fusion'].")
            self._head_fusion = str(rollout.get("head_fusion", "mean"))
            self._discard_ratio = float(rollout.get("discard_ratio", 0.0))
            if self._head_fusion not in HEAD_FUSIONS:
                raise ValueError(f"head_fusion must be one of {list(HEAD_FUSIONS)}, got {self._head_fusion!r}.")
            if not 0.0 <= self._discard_ratio < 1.0:
                raise ValueError(f"discard_ratio must lie in [0, 1), got {self._discard_ratio}.")
        self._rollout_wanted = rollout is not None
        #: layers seen so far.
        self.count = 0
        #: per layer, the class-token row of every head, ``[B, heads, T]`` fp32 (with ``class_rows``).
        self.class_rows: list[Tensor] = []
        self._rollout: Tensor | None = None
        #: the first layer's attention, on the graph: what a pass without an image gradient differentiates.
        self.first: Tensor | None = None
        self._row: Tensor | None = None
        self._row_shape: tuple[int, int, torch.device] | None = None
        self._next: int | None = None
        self._waiting: dict[int, Tensor] = {}
        self._pending: dict[int, Tensor] = {}  # each layer's attention until its gradient has been folded
        self._handles: list[RemovableHandle] = []

    def __call__(self, weights: Tensor) -> None:
        """Fold one layer's attention ``[B, heads, T, T]`` (the next in depth order)."""
        index = self.count
        self.count += 1
        attn = check_attention(weights, self.layout)
        seen = attn.detach()
        self._row_shape = (int(seen.shape[0]), int(seen.shape[-1]), seen.device)
        if self.keep_class_rows:
            self.class_rows.append(seen[:, :, 0, :].to(torch.float32, copy=True))  # a view would keep the layer
        if self._rollout_wanted:
            mixed = rollout_layer(seen, self._head_fusion, self._discard_ratio)
            self._rollout = mixed if self._rollout is None else mixed @ self._rollout
        if self.grad_rollout and attn.requires_grad:
            if index == 0:
                self.first = attn
            self._pending[index] = seen
            self._handles.append(attn.register_hook(partial(self._on_grad, index)))

    def _on_grad(self, index: int, grad: Tensor) -> None:
        if self._next is None:
            self._next = self.count - 1
        self._waiting[index] = relevance_weights(self._pending.pop(index), grad)
        while self._next in self._waiting:
            self._fold(self._waiting.pop(self._next))
            self._next -= 1

    @staticmethod
    def _start_row(batch: int, tokens: int, device: torch.device) -> Tensor:
        row = torch.zeros(batch, tokens, dtype=torch.float32, device=device)
        row[:, 0] = 1.0
        return row

    def _fold(self, weighted: Tensor) -> None:
        if self._row is None:
            self._row = self._start_row(weighted.shape[0], weighted.shape[-1], weighted.device)
        self._row = self._row + (self._row.unsqueeze(1) @ weighted).squeeze(1)

    def finish(self) -> None:
        """After the backward: fold what still waits (layers after a gradient that never came) and drop the hooks."""
        for index in sorted(self._waiting, reverse=True):
            self._fold(self._waiting.pop(index))
        if self._row is None and self._row_shape is not None:  # no gradient reached any layer: R = I
            self._row = self._start_row(*self._row_shape)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        self.first = None

    def _grid(self, rows: Tensor) -> Tensor:
        layout = self.layout
        return rows[..., layout.num_prefix_tokens :].reshape(*rows.shape[:-1], *layout.grid)

    def head_maps(self, layer: int) -> Tensor:
        """Class-token attention per head of ``layer`` (negative counts from the end), ``[B, heads, gh, gw]``."""
        if not self.class_rows:
            raise RuntimeError("no class-token rows were kept (class_rows=False, or no layer ran).")
        if not -len(self.class_rows) <= layer < len(self.class_rows):
            raise ValueError(f"layer {layer} is out of range for {len(self.class_rows)} layers.")
        return self._grid(self.class_rows[layer])

    def layer_maps(self) -> Tensor:
        """Head-averaged class-token attention of every layer, ``[B, layers, gh, gw]``."""
        return torch.stack([self._grid(rows).mean(dim=1) for rows in self.class_rows], dim=1)

    def rollout_map(self) -> Tensor:
        """The class-token row of the rollout over the patch grid, ``[B, gh, gw]`` fp32."""
        if self._rollout is None:
            raise RuntimeError("no rollout was accumulated (rollout=None, or no layer ran).")
        return self._grid(self._rollout[:, 0, :])

    def grad_rollout_map(self) -> Tensor:
        """The class-token row of gradient-weighted rollout over the patch grid, ``[B, gh, gw]`` fp32."""
        if self._row is None:
            raise RuntimeError("no gradient-weighted rollout: no layer ran, or finish() was not called.")
        return self._grid(self._row)
