"""Attention maps from captured attention tensors: class-token attention, rollout, gradient-weighted rollout.

Pure tensor math on ``[B, heads, T, T]`` attention (from :func:`lightning_explain.capture.capture_attention`) and
a :class:`~lightning_explain.functional.vit_layouts.ViTLayout`; no model, no hooks. Maps are ``[B, gh, gw]``
fp32 on the patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.vit_layouts import ViTLayout

__all__ = ["HEAD_FUSIONS", "SPECS", "attention_rollout", "check_attention", "cls_attention", "grad_rollout"]

HeadFusion = Literal["mean", "max", "min"]

#: Head fusions accepted by :func:`attention_rollout`.
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def check_attention(attn: Tensor, layout: ViTLayout) -> Tensor:
    """``attn`` unchanged when it is ``[B, heads, T, T]`` with the layout's token count; else a ValueError."""
    if not isinstance(attn, Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = list(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__
        raise ValueError(f"attention must be [B, heads, T, T]; got {shape}.")
    if attn.shape[-1] != layout.num_tokens:
        raise ValueError(
            f"attention has {attn.shape[-1]} tokens but the layout expects {layout.num_tokens} = "
            f"{layout.num_prefix_tokens} prefix + {layout.grid[0]}x{layout.grid[1]} patches: feed images of the "
            "size the model was built for."
        )
    return attn


def _patch_row_to_grid(rows: Tensor, layout: ViTLayout) -> Tensor:
    """``[..., T]`` rows over all tokens -> ``[..., gh, gw]`` over the patch tokens (prefix tokens dropped)."""
    return rows[..., layout.num_prefix_tokens :].reshape(*rows.shape[:-1], *layout.grid)


def _require_class_token(layout: ViTLayout) -> None:
    if not layout.has_class_token:
        raise ValueError("the model has no class token; class-token attention and rollout read the class-token row.")


def cls_attention(attn: Tensor, layout: ViTLayout) -> Tensor:
    """Class-token attention to the patch tokens, per head: ``attn[:, :, 0, prefix:]`` on the grid.

    Args:
        attn: one layer's attention ``[B, heads, T, T]``.
        layout: from :func:`vit_layout`.

    Returns:
        ``[B, heads, gh, gw]`` fp32; ``.mean(1)`` gives the head-averaged map.

    Example:
        >>> import torch
        >>> layout = ViTLayout("timm", 2, (2, 3), ("blocks.0.attn",), ("blocks.0",), 4)
        >>> cls_attention(torch.softmax(torch.rand(5, 4, 8, 8), -1), layout).shape
        torch.Size([5, 4, 2, 3])
    """
    _require_class_token(layout)
    return _patch_row_to_grid(check_attention(attn, layout)[:, :, 0, :].float(), layout)


def _fuse_heads(attn: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {list(HEAD_FUSIONS)}, got {head_fusion!r}.")


def _discard_lowest(fused: Tensor, ratio: float) -> Tensor:
    """Zero the ``floor(ratio * T * (T - 1))`` lowest off-diagonal entries of each sample's ``[T, T]`` matrix."""
    batch, tokens, _ = fused.shape
    count = int(ratio * tokens * (tokens - 1))
    if count == 0:
        return fused
    flat = fused.reshape(batch, tokens * tokens)
    diagonal = torch.eye(tokens, dtype=torch.bool, device=fused.device).reshape(1, -1)
    ranked = flat.masked_fill(diagonal, float("inf"))
    lowest = ranked.topk(count, dim=1, largest=False).indices
    return flat.scatter(1, lowest, 0.0).reshape(batch, tokens, tokens)


def rollout_layer(attn: Tensor, head_fusion: str, discard_ratio: float) -> Tensor:
    """One layer's factor of :func:`attention_rollout`: heads fused, weak entries discarded, ``0.5 A + 0.5 I``
    renormalised per row; ``[B, T, T]`` fp32 from ``[B, heads, T, T]``."""
    fused = _fuse_heads(attn.float(), head_fusion)
    if discard_ratio > 0.0:
        fused = _discard_lowest(fused, discard_ratio)
    eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
    mixed = 0.5 * fused + 0.5 * eye
    return mixed / mixed.sum(dim=-1, keepdim=True)


def relevance_weights(attn: Tensor, grad: Tensor) -> Tensor:
    """One layer's term of :func:`grad_rollout`: ``mean_heads(ReLU(dS/dA * A))``, ``[B, T, T]`` fp32."""
    return torch.relu(grad.float() * attn.float()).mean(dim=1)


def attention_rollout(
    attentions: Sequence[Tensor],
    layout: ViTLayout,
    *,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020), per sample.

    For each layer ``l`` (in depth order): fuse the heads (mean, max or min) into ``A_l`` ``[B, T, T]``; optionally
    discard weak entries; ``A'_l = 0.5 A_l + 0.5 I`` with each row renormalised to sum 1 (the residual path);
    rollout ``R = A'_L ... A'_2 A'_1`` (batched matrix products: samples never mix). The map is the class-token
    row of ``R`` over the patch tokens (all prefix tokens dropped), reshaped to the grid.

    Discarding: per sample and layer, the ``floor(discard_ratio * T * (T - 1))`` lowest entries of the fused
    matrix are set to zero, chosen among the off-diagonal entries only. The diagonal (each token's attention to
    itself, class token included) is never discarded; class-token rows and columns are otherwise treated like any
    other entry. Rows therefore never become empty, and the identity term keeps every row sum positive.

    Args:
        attentions: per-layer attention ``[B, heads, T, T]`` in depth order (from :func:`capture_attention`).
        layout: from :func:`vit_layout`.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of off-diagonal entries to zero per layer.

    Returns:
        ``[B, gh, gw]`` fp32.

    Example:
        >>> import torch
        >>> layout = ViTLayout("torchvision", 1, (2, 2), ("a0", "a1"), ("b0", "b1"), 3)
        >>> maps = [torch.softmax(torch.rand(2, 3, 5, 5), -1) for _ in range(2)]
        >>> attention_rollout(maps, layout, head_fusion="max", discard_ratio=0.5).shape
        torch.Size([2, 2, 2])
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer of attention.")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must lie in [0, 1), got {discard_ratio}.")
    _require_class_token(layout)
    rollout: Tensor | None = None
    for attn in attentions:
        mixed = rollout_layer(check_attention(attn, layout), head_fusion, discard_ratio)
        rollout = mixed if rollout is None else mixed @ rollout
    assert rollout is not None
    return _patch_row_to_grid(rollout[:, 0, :], layout)


def grad_rollout(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: ViTLayout) -> Tensor:
    """Gradient-weighted attention rollout (Chefer et al. 2021, the generic rule for self-attention).

    ``R = I``; for each layer in depth order ``R <- R + mean_heads(ReLU(dS/dA * A)) @ R``; the map is the
    class-token row of ``R`` over the patch tokens, reshaped to the grid. Per sample (batched products).

    Args:
        attentions: per-layer attention ``[B, heads, T, T]`` in depth order.
        grads: the gradient of the explained score with respect to each of them, same shapes.
        layout: from :func:`vit_layout`.

    Returns:
        ``[B, gh, gw]`` fp32.

    Example:
        >>> import torch
        >>> layout = ViTLayout("torchvision", 1, (2, 2), ("a0",), ("b0",), 3)
        >>> attn = torch.softmax(torch.rand(2, 3, 5, 5), -1)
        >>> grad_rollout([attn], [torch.ones_like(attn)], layout).shape
        torch.Size([2, 2, 2])
    """
    if len(attentions) != len(grads):
        raise ValueError(f"got {len(attentions)} attention tensors but {len(grads)} gradients.")
    if not attentions:
        raise ValueError("grad_rollout needs at least one layer of attention.")
    _require_class_token(layout)
    relevance: Tensor | None = None
    for attn, grad in zip(attentions, grads, strict=True):
        attn = check_attention(attn, layout).float()
        if grad.shape != attn.shape:
            raise ValueError(f"gradient shape {list(grad.shape)} differs from attention shape {list(attn.shape)}.")
        weighted = relevance_weights(attn, grad)
        if relevance is None:
            eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
            relevance = eye.expand_as(weighted)
        relevance = relevance + weighted @ relevance
    assert relevance is not None
    return _patch_row_to_grid(relevance[:, 0, :], layout)


def _attention(ctx: MethodContext, *, layer: int = -1) -> Tensor:
    """Head-averaged class-token attention of block ``layer``; per head and per layer go to ``ctx.views``."""
    index = int(layer)
    fold = ctx.attention_fold
    if fold is not None:  # only the class-token rows were kept, as each layer ran
        if not -fold.count <= index < fold.count:
            raise ValueError(f"options['attention']['layer']={index} is out of range for {fold.count} layers.")
        heads = fold.head_maps(index)
        ctx.views["attention_heads"] = heads
        ctx.views["attention_layers"] = fold.layer_maps()
        return heads.mean(dim=1)
    weights = ctx.attentions
    if not -len(weights) <= index < len(weights):
        raise ValueError(f"options['attention']['layer']={index} is out of range for {len(weights)} layers.")
    heads = cls_attention(weights[index], ctx.layout)
    ctx.views["attention_heads"] = heads
    ctx.views["attention_layers"] = torch.stack([cls_attention(w, ctx.layout).mean(dim=1) for w in weights], dim=1)
    return heads.mean(dim=1)


def _rollout(ctx: MethodContext, **options: Any) -> Tensor:
    if ctx.attention_fold is not None:  # one running product, folded with these options as each layer ran
        return ctx.attention_fold.rollout_map()
    return attention_rollout(ctx.attentions, ctx.layout, **options)


def _grad_rollout(ctx: MethodContext) -> Tensor:
    if ctx.attention_fold is not None:  # one class-token row, folded as each layer's gradient arrived
        return ctx.attention_fold.grad_rollout_map()
    return grad_rollout(ctx.attentions, ctx.attention_grads, ctx.layout)


#: The attention methods of :func:`~lightning_explain.functional.explain`, from the attention weights (and their
#: gradients) of the shared pass, on the patch grid.
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("attention", _attention, reads=frozenset({"attention"}), at_layer=True, function="vit_attention"),
    MethodSpec(
        "rollout",
        _rollout,
        reads=frozenset({"attention"}),
        at_layer=True,
        options_from=attention_rollout,
        function="vit_rollout",
    ),
    MethodSpec(
        "grad_rollout",
        _grad_rollout,
        reads=frozenset({"attention", "attention_grad"}),
        at_layer=True,
        function="vit_grad_rollout",
    ),
)
