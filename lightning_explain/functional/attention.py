"""Attention maps of Vision Transformers: class-token attention, attention rollout, gradient-weighted rollout, and
Grad-CAM on token layers.

Pure tensor functions: no Lightning import, no lasting change to the model. Hooks, timm's ``fused_attn`` flags and
Hugging Face's attention implementation are switched for one pass and restored in ``finally``, also when the pass
raises. Gradients come from ``torch.autograd.grad`` (never ``.backward()``), so ``param.grad`` is never touched.
Maps are ``[B, gh, gw]`` fp32 on the patch grid; upsample them with
:func:`lightning_explain.functional.upsample_maps`.

Supported models (also as a submodule of a wrapper such as a LightningModule; the first one found is used):

* torchvision ``VisionTransformer`` (``vit_b_16`` ...): one class token.
* timm ``VisionTransformer`` and subclasses (DeiT with a distillation token, models with register tokens, class
  token or average pooling): ``num_prefix_tokens`` prefix tokens.
* Hugging Face ``ViTModel`` / ``ViTForImageClassification`` with the transformers >= 5 layout (``vit.layers``), only
  when transformers is installed (it is an optional dependency; nothing here imports it). The transformers 4.x layout
  (``vit.encoder.layer``) is rejected with a ValueError.

Gradient maps of a freshly built torchvision ``VisionTransformer`` are all zero: torchvision zero-initialises the
classification head, so no gradient reaches the body until the head has trained.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    >>> vit_rollout(model.eval(), torch.rand(3, 3, 32, 32)).shape
    torch.Size([3, 4, 4])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_explain.capture import record_layer, resolve_layer
from lightning_explain.functional._common import (
    OutputTransform,
    Targets,
    autocast_off,
    check_inputs,
    grad_context,
    logits_from_output,
    model_dtype,
    target_scores,
)

__all__ = [
    "HEAD_FUSIONS",
    "ViTLayout",
    "attention_rollout",
    "capture_attention",
    "cls_attention",
    "default_token_layer",
    "grad_rollout",
    "token_grad_cam",
    "tokens_to_grid",
    "vit_attention",
    "vit_grad_rollout",
    "vit_layout",
    "vit_rollout",
]

LayoutKind = Literal["torchvision", "timm", "hf"]
HeadFusion = Literal["mean", "max", "min"]

#: Head fusions accepted by :func:`attention_rollout`.
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")

_SUPPORTED = (
    "torchvision.models.VisionTransformer, timm VisionTransformer (and subclasses such as DeiT distilled or "
    "models with register tokens), and Hugging Face ViTModel / ViTForImageClassification (transformers >= 5)"
)


@dataclass(frozen=True)
class ViTLayout:
    """Where a Vision Transformer keeps its tokens and attention modules.

    Attributes:
        kind: ``"torchvision"``, ``"timm"`` or ``"hf"``.
        num_prefix_tokens: tokens before the patch tokens (class + distillation + register tokens).
        grid: the patch grid ``(gh, gw)`` of the model's configured image size.
        attention_names: dotted names (relative to the model given to :func:`vit_layout`) of the attention
            modules, in depth order.
        block_names: dotted names of the transformer blocks, in depth order.
        num_heads: attention heads per layer.
        has_class_token: token 0 is a class token (needed by class-token attention and rollout).
        pools_prefix_tokens: the classifier reads only prefix tokens (class / distillation token pooling), so the
            last block's patch tokens get zero gradient.
    """

    kind: LayoutKind
    num_prefix_tokens: int
    grid: tuple[int, int]
    attention_names: tuple[str, ...]
    block_names: tuple[str, ...]
    num_heads: int
    has_class_token: bool = True
    pools_prefix_tokens: bool = True

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.block_names)

    @property
    def num_patches(self) -> int:
        """``gh * gw``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        """Sequence length ``T = num_prefix_tokens + gh * gw``."""
        return self.num_prefix_tokens + self.num_patches


# ---------------------------------------------------------------------------------------------------------------
# Layout detection
# ---------------------------------------------------------------------------------------------------------------


def _loaded_class(module_name: str, class_name: str) -> type | None:
    """A class from an already imported module (a model of a library exists only once that library is imported)."""
    module = sys.modules.get(module_name)
    cls = getattr(module, class_name, None) if module is not None else None
    return cls if isinstance(cls, type) else None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _torchvision_layout(vit: Any, prefix: str) -> ViTLayout:
    layers = vit.encoder.layers
    names = [name for name, _ in layers.named_children()]
    if not names:
        raise ValueError("the torchvision VisionTransformer has no encoder layers.")
    blocks = tuple(_join(prefix, f"encoder.layers.{name}") for name in names)
    side = int(vit.image_size) // int(vit.patch_size)
    first = getattr(layers, names[0]).self_attention
    return ViTLayout(
        kind="torchvision",
        num_prefix_tokens=1,
        grid=(side, side),
        attention_names=tuple(f"{b}.self_attention" for b in blocks),
        block_names=blocks,
        num_heads=int(first.num_heads),
    )


def _timm_attention_in(block: nn.Module) -> tuple[str, Any] | None:
    """The module of a timm block that owns ``fused_attn`` and an ``attn_drop`` applied to the softmax."""
    for name, module in block.named_modules():
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
            return name, module
    return None


def _timm_layout(vit: Any, prefix: str) -> ViTLayout:
    blocks: list[str] = []
    attentions: list[str] = []
    heads = 0
    for index, block in enumerate(vit.blocks):
        found = _timm_attention_in(block)
        block_name = _join(prefix, f"blocks.{index}")
        if found is None:
            raise ValueError(
                f"timm block {block_name!r} ({type(block).__name__}) has no attention module with `fused_attn` "
                f"and `attn_drop`; supported: {_SUPPORTED}."
            )
        blocks.append(block_name)
        attentions.append(_join(block_name, found[0]))
        heads = int(found[1].num_heads)
    if not blocks:
        raise ValueError("the timm VisionTransformer has no blocks.")
    return ViTLayout(
        kind="timm",
        num_prefix_tokens=int(vit.num_prefix_tokens),
        grid=_pair(tuple(vit.patch_embed.grid_size)),
        attention_names=tuple(attentions),
        block_names=tuple(blocks),
        num_heads=heads,
        has_class_token=bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None)),
        pools_prefix_tokens=getattr(vit, "global_pool", "token") == "token",
    )


def _is_hf_vit(module: nn.Module) -> bool:
    return any(
        cls.__name__ == "ViTPreTrainedModel" and cls.__module__.startswith("transformers.")
        for cls in type(module).__mro__
    )


def _hf_layout(vit: Any, prefix: str) -> ViTLayout:
    base, base_prefix = (
        (vit.vit, _join(prefix, "vit")) if isinstance(getattr(vit, "vit", None), nn.Module) else (vit, prefix)
    )
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(vit).__name__} has no `layers` list: only the transformers >= 5 ViT layout (vit.layers.N.attention "
            f"returning (output, weights)) is supported; supported: {_SUPPORTED}."
        )
    config = base.config
    image, patch = _pair(config.image_size), _pair(config.patch_size)
    blocks = tuple(_join(base_prefix, f"layers.{i}") for i in range(len(layers)))
    if not blocks:
        raise ValueError("the Hugging Face ViT has no layers.")
    return ViTLayout(
        kind="hf",
        num_prefix_tokens=1,
        grid=(image[0] // patch[0], image[1] // patch[1]),
        attention_names=tuple(f"{b}.attention" for b in blocks),
        block_names=blocks,
        num_heads=int(config.num_attention_heads),
    )


def _layout_of(module: nn.Module, prefix: str) -> ViTLayout | None:
    tv_vit = _loaded_class("torchvision.models.vision_transformer", "VisionTransformer")
    if tv_vit is not None and isinstance(module, tv_vit):
        return _torchvision_layout(module, prefix)
    timm_vit = _loaded_class("timm.models.vision_transformer", "VisionTransformer")
    if timm_vit is not None and isinstance(module, timm_vit):
        return _timm_layout(module, prefix)
    if _is_hf_vit(module):
        return _hf_layout(module, prefix)
    return None


def vit_layout(model: nn.Module) -> ViTLayout:
    """Detect a supported Vision Transformer (the model itself or its first ViT submodule) and describe its tokens.

    Names in the layout are relative to ``model``, so a LightningModule that wraps a ViT works as it is.

    Raises:
        ValueError: no supported ViT was found (the message lists what is supported).

    Example:
        >>> import torchvision
        >>> layout = vit_layout(torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32))
        >>> layout.kind, layout.num_prefix_tokens, layout.grid, layout.attention_names[0]
        ('torchvision', 1, (4, 4), 'encoder.layers.encoder_layer_0.self_attention')
    """
    for name, module in model.named_modules():
        layout = _layout_of(module, name)
        if layout is not None:
            return layout
    raise ValueError(
        f"{type(model).__name__} is not (and does not contain) a recognised Vision Transformer; "
        f"supported: {_SUPPORTED}."
    )


# ---------------------------------------------------------------------------------------------------------------
# Attention capture
# ---------------------------------------------------------------------------------------------------------------


def _check_attention(attn: Tensor, layout: ViTLayout) -> Tensor:
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


def _mha_value(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    value = args[2] if len(args) > 2 else kwargs["value"]
    if not isinstance(value, Tensor):
        raise TypeError("nn.MultiheadAttention was called without a value tensor.")
    return value


def _mha_output_from_weights(mha: nn.MultiheadAttention, weights: Tensor, value: Tensor) -> Tensor:
    """``out_proj(concat_h(A_h V_h))``: the attention output as a function of the captured weights ``A``.

    ``nn.MultiheadAttention`` returns its weights as a view made *after* they were multiplied with ``V``, so no
    gradient reaches that view. Recomputing the output from the view puts it on the gradient path.
    """
    if not (mha.batch_first and mha._qkv_same_embed_dim) or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("keep_graph=True supports batch_first MultiheadAttention with packed in_proj weights only.")
    if value.ndim != 3:
        raise ValueError(f"expected batched [B, T, C] tokens for MultiheadAttention, got {list(value.shape)}.")
    batch, length, dim = value.shape
    heads = mha.num_heads
    w_v = mha.in_proj_weight[2 * dim :]
    b_v = mha.in_proj_bias[2 * dim :] if mha.in_proj_bias is not None else None
    v = F.linear(value, w_v, b_v).view(batch, length, heads, dim // heads).transpose(1, 2)
    context = (weights @ v).transpose(1, 2).reshape(batch, weights.shape[-2], dim)
    return F.linear(context, mha.out_proj.weight, mha.out_proj.bias)


def _force_mha_weights(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    # forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
    new_args, new_kwargs = list(args), dict(kwargs)
    if len(new_args) > 4:
        new_args[4] = True
    else:
        new_kwargs["need_weights"] = True
    if len(new_args) > 6:
        new_args[6] = False
    else:
        new_kwargs["average_attn_weights"] = False
    return tuple(new_args), new_kwargs


def _select_layers(depth: int, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(depth))
    chosen = []
    for layer in layers:
        if not -depth <= layer < depth:
            raise IndexError(f"layer {layer} is out of range for a model with {depth} blocks.")
        chosen.append(layer % depth)
    return sorted(set(chosen))


@contextmanager
def capture_attention(
    model: nn.Module,
    layout: ViTLayout | None = None,
    *,
    keep_graph: bool = False,
    layers: Sequence[int] | None = None,
) -> Iterator[list[Tensor]]:
    """Record each layer's post-softmax attention ``[B, heads, T, T]`` during the forward pass in the block.

    Run ONE forward pass inside the block; the list fills in call order, which is depth order for the supported
    models. In train mode with attention dropout the recorded weights are the dropped-out ones the model used: run
    the pass in eval mode for explanations.

    How each kind is captured (and restored in ``finally``, also when the pass raises):

    * torchvision: a forward pre-hook (``with_kwargs=True``) on each ``nn.MultiheadAttention`` forces
      ``need_weights=True, average_attn_weights=False`` (``EncoderBlock`` asks for ``need_weights=False``) and a
      forward hook reads ``output[1]``. With weights requested, MultiheadAttention takes its explicit softmax path
      instead of ``scaled_dot_product_attention``: outputs differ from the plain forward by float rounding. With
      ``keep_graph=True`` the hook also recomputes the attention output from the returned weights, because the
      module returns them as a view that is off the gradient path.
    * timm: ``fused_attn`` is set to False on each attention module (the fused kernel never materialises the
      weights) and a forward hook on its ``attn_drop`` reads the attention after the softmax.
    * Hugging Face: the config's attention implementation is switched to ``"eager"`` (SDPA returns no weights) and
      a forward hook on each ``ViTAttention`` reads ``output[1]``. ``output_attentions=True`` cannot be passed
      through a plain ``model(x)`` call, hence the hooks.

    Args:
        model: the model that is called inside the block (a ViT or a module wrapping one).
        layout: from :func:`vit_layout`; None detects it.
        keep_graph: keep the recorded tensors in the autograd graph (for :func:`grad_rollout`); False detaches them.
        layers: block indices to record (negative counts from the end); None records every layer.

    Yields:
        The list that the pass fills with ``[B, heads, T, T]`` attention tensors.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32).eval()
        >>> with capture_attention(model) as attentions:
        ...     _ = model(torch.rand(1, 3, 32, 32))
        >>> [tuple(a.shape) for a in attentions]
        [(1, 2, 17, 17), (1, 2, 17, 17)]
    """
    layout = vit_layout(model) if layout is None else layout
    named = dict(model.named_modules())
    modules = [named[layout.attention_names[i]] for i in _select_layers(layout.depth, layers)]
    attentions: list[Tensor] = []
    handles: list[RemovableHandle] = []
    restores: list[Callable[[], None]] = []

    def record(weights: Any, where: str) -> None:
        if not isinstance(weights, Tensor) or weights.ndim != 4:
            got = list(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise RuntimeError(f"{where} returned no [B, heads, T, T] attention weights (got {got}).")
        attentions.append(weights if keep_graph else weights.detach())

    def on_mha(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        weights = output[1]
        record(weights, type(module).__name__)
        if keep_graph:
            assert isinstance(module, nn.MultiheadAttention)
            return _mha_output_from_weights(module, weights, _mha_value(args, kwargs)), weights
        return None

    def on_timm_dropout(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        record(output, "timm attn_drop")

    def on_hf_attention(module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        record(output[1] if isinstance(output, tuple) and len(output) > 1 else None, type(module).__name__)

    def set_attr(obj: Any, attr: str, value: Any) -> None:
        old = getattr(obj, attr)
        restores.append(lambda: setattr(obj, attr, old))
        setattr(obj, attr, value)

    try:
        for module in modules:
            if layout.kind == "torchvision":
                handles.append(module.register_forward_pre_hook(_force_mha_weights, with_kwargs=True))
                handles.append(module.register_forward_hook(on_mha, with_kwargs=True))
            elif layout.kind == "timm":
                set_attr(module, "fused_attn", False)
                handles.append(module.attn_drop.register_forward_hook(on_timm_dropout))
            else:
                config = module.config
                if config._attn_implementation != "eager":
                    set_attr(config, "_attn_implementation", "eager")
                handles.append(module.register_forward_hook(on_hf_attention))
        yield attentions
    finally:
        for handle in reversed(handles):
            handle.remove()
        for restore in reversed(restores):
            restore()


# ---------------------------------------------------------------------------------------------------------------
# Methods on captured tensors
# ---------------------------------------------------------------------------------------------------------------


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
    return _patch_row_to_grid(_check_attention(attn, layout)[:, :, 0, :].float(), layout)


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
        fused = _fuse_heads(_check_attention(attn, layout).float(), head_fusion)
        if discard_ratio > 0.0:
            fused = _discard_lowest(fused, discard_ratio)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
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
        attn = _check_attention(attn, layout).float()
        if grad.shape != attn.shape:
            raise ValueError(f"gradient shape {list(grad.shape)} differs from attention shape {list(attn.shape)}.")
        weighted = torch.relu(grad.float() * attn).mean(dim=1)
        if relevance is None:
            eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
            relevance = eye.expand_as(weighted)
        relevance = relevance + weighted @ relevance
    assert relevance is not None
    return _patch_row_to_grid(relevance[:, 0, :], layout)


def tokens_to_grid(tokens: Tensor, layout: ViTLayout) -> Tensor:
    """Token features ``[B, T, C]`` -> feature maps ``[B, C, gh, gw]``: prefix tokens dropped, patches row-major.

    All supported models keep tokens batch-first (torchvision's encoder blocks too).

    Example:
        >>> import torch
        >>> layout = ViTLayout("timm", 5, (2, 2), ("blocks.0.attn",), ("blocks.0",), 1)
        >>> tokens_to_grid(torch.rand(3, 9, 7), layout).shape
        torch.Size([3, 7, 2, 2])
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 3:
        shape = list(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be [B, T, C] (batch first); got {shape}.")
    if tokens.shape[1] != layout.num_tokens:
        raise ValueError(
            f"got {tokens.shape[1]} tokens but the layout expects {layout.num_tokens} = {layout.num_prefix_tokens} "
            f"prefix + {layout.grid[0]}x{layout.grid[1]} patches (is the layer's output [B, T, C]?)."
        )
    patches = tokens[:, layout.num_prefix_tokens :, :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *layout.grid)


_PRE_NORM = {"torchvision": "ln_1", "timm": "norm1", "hf": "layernorm_before"}


def default_token_layer(model: nn.Module, layout: ViTLayout | None = None) -> str:
    """A token layer whose Grad-CAM is not identically zero.

    When the classifier reads only the class (and distillation) token, the last block's patch-token outputs never
    reach the logits (pytorch-grad-cam #363, #513): their gradient is exactly zero and Grad-CAM on the last block is
    all zeros. The default is then the output of the second-to-last block (= the input of the last block, whose
    attention carries the patch tokens into the class token). With one block only, it is that block's pre-attention
    LayerNorm. When the model pools all tokens (timm ``global_pool="avg"`` and similar), the last block is used.

    Example:
        >>> import torchvision
        >>> default_token_layer(torchvision.models.VisionTransformer(32, 8, 3, 2, 16, 32))
        'encoder.layers.encoder_layer_1'
    """
    layout = vit_layout(model) if layout is None else layout
    if not layout.pools_prefix_tokens:
        return layout.block_names[-1]
    if layout.depth >= 2:
        return layout.block_names[-2]
    name = f"{layout.block_names[0]}.{_PRE_NORM[layout.kind]}"
    if name not in dict(model.named_modules()):
        raise ValueError("no default token layer for this one-block model; pass layer='<dotted name>'.")
    return name


# ---------------------------------------------------------------------------------------------------------------
# One-pass convenience functions
# ---------------------------------------------------------------------------------------------------------------


def _attention_pass(model: nn.Module, inputs: Tensor, layout: ViTLayout, layers: Sequence[int] | None) -> list[Tensor]:
    inputs = check_inputs(inputs)
    with torch.no_grad(), autocast_off(inputs.device):
        x = inputs.to(model_dtype(model))
        with capture_attention(model, layout, keep_graph=False, layers=layers) as attentions:
            model(x)
    expected = layout.depth if layers is None else len(_select_layers(layout.depth, layers))
    if len(attentions) != expected:
        raise RuntimeError(f"captured {len(attentions)} attention layers in one forward pass, expected {expected}.")
    return attentions


def vit_attention(model: nn.Module, inputs: Tensor, *, layer: int = -1) -> tuple[Tensor, Tensor]:
    """Class-token attention of one layer from one forward pass (no gradients).

    Args:
        model: a supported ViT (or a module wrapping one); its train/eval mode is left as it is.
        inputs: images ``[B, C, H, W]`` of the size the model was built for.
        layer: block index; -1 is the last block.

    Returns:
        ``(mean, per_head)``: ``[B, gh, gw]`` and ``[B, heads, gh, gw]``, fp32, detached.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32).eval()
        >>> mean, per_head = vit_attention(model, torch.rand(2, 3, 32, 32), layer=0)
        >>> mean.shape, per_head.shape
        (torch.Size([2, 4, 4]), torch.Size([2, 2, 4, 4]))
    """
    layout = vit_layout(model)
    (attn,) = _attention_pass(model, inputs, layout, [layer])
    per_head = cls_attention(attn, layout)
    return per_head.mean(dim=1), per_head


def vit_rollout(
    model: nn.Module,
    inputs: Tensor,
    *,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout (:func:`attention_rollout`) from one forward pass, ``[B, gh, gw]`` fp32 (no gradients).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32).eval()
        >>> vit_rollout(model, torch.rand(2, 3, 32, 32), discard_ratio=0.9).shape
        torch.Size([2, 4, 4])
    """
    layout = vit_layout(model)
    attentions = _attention_pass(model, inputs, layout, None)
    return attention_rollout(attentions, layout, head_fusion=head_fusion, discard_ratio=discard_ratio)


def vit_grad_rollout(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Gradient-weighted rollout (:func:`grad_rollout`) from one forward pass and one ``torch.autograd.grad`` call.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (the inputs are cloned inside
    ``inference_mode(False)``); never calls ``.backward()``, so ``param.grad`` is untouched.

    Args:
        model: a supported ViT (or a module wrapping one); its train/eval mode is left as it is.
        inputs: images ``[B, C, H, W]``.
        targets: None (the predicted class), an int, a tensor of one class index per sample, or a callable from
            logits ``[B, C]`` to per-sample scores ``[B]``.
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.

    Returns:
        ``[B, gh, gw]`` fp32, detached.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=4).eval()
        >>> vit_grad_rollout(model, torch.rand(2, 3, 32, 32), targets=torch.tensor([1, 3])).shape
        torch.Size([2, 4, 4])
    """
    inputs = check_inputs(inputs)
    layout = vit_layout(model)
    with ExitStack() as stack:
        stack.enter_context(grad_context(inputs.device))
        x = inputs.detach().clone().to(model_dtype(model)).requires_grad_(True)
        with capture_attention(model, layout, keep_graph=True) as attentions:
            output = model(x)
        if len(attentions) != layout.depth:
            raise RuntimeError(f"captured {len(attentions)} attention layers, expected {layout.depth}.")
        scores, _ = target_scores(logits_from_output(output, output_transform), targets)
        grads = torch.autograd.grad(scores.sum(), attentions, allow_unused=True)
        filled = [torch.zeros_like(a) if g is None else g for g, a in zip(grads, attentions, strict=True)]
        return grad_rollout([a.detach() for a in attentions], [g.detach() for g in filled], layout)


def token_grad_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None = None,
    targets: Targets = None,
    *,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on a token layer, ``[B, gh, gw]`` fp32, ReLU'd, not normalised.

    The layer's output tokens ``[B, T, C]`` are recorded in one forward pass, their gradient comes from one
    ``torch.autograd.grad`` call, both are reshaped with :func:`tokens_to_grid`, and
    ``map = ReLU(sum_c mean_grid(dS/dA_c) A_c)``.

    Caveat: with class-token pooling, the last block's output gives an all-zero map (its patch tokens get zero
    gradient); ``layer=None`` picks :func:`default_token_layer`, which avoids that.

    Args:
        model: a supported ViT (or a module wrapping one); its train/eval mode is left as it is.
        inputs: images ``[B, C, H, W]``.
        layer: dotted name or module with ``[B, T, C]`` output; None picks :func:`default_token_layer`.
        targets: as in :func:`vit_grad_rollout`.
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=4).eval()
        >>> token_grad_cam(model, torch.rand(2, 3, 32, 32), targets=1).shape
        torch.Size([2, 4, 4])
    """
    inputs = check_inputs(inputs)
    layout = vit_layout(model)
    name, module = resolve_layer(model, default_token_layer(model, layout) if layer is None else layer)
    with ExitStack() as stack:
        stack.enter_context(grad_context(inputs.device))
        x = inputs.detach().clone().to(model_dtype(model)).requires_grad_(True)
        with record_layer(module, name) as recording:
            output = model(x)
        if not recording.outputs:
            raise RuntimeError(f"layer {name!r} was not called during the forward pass.")
        tokens = recording.outputs[-1]
        if not isinstance(tokens, Tensor):
            raise ValueError(f"layer {name!r} outputs {type(tokens).__name__}; token Grad-CAM needs [B, T, C] tokens.")
        activations = tokens_to_grid(tokens.detach().float(), layout)
        scores, _ = target_scores(logits_from_output(output, output_transform), targets)
        (grad,) = torch.autograd.grad(scores.sum(), [tokens], allow_unused=True)
        gradients = torch.zeros_like(activations) if grad is None else tokens_to_grid(grad.detach().float(), layout)
        weights = gradients.mean(dim=(2, 3))
        return torch.relu(torch.einsum("bc,bchw->bhw", weights, activations))
