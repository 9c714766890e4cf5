"""Record a Vision Transformer's attention weights during one forward pass.

Each kind of model computes its attention in a way that does not keep the weights (a fused kernel, or
``need_weights=False``); :func:`capture_attention` switches that off for one pass and restores it in ``finally``,
also when the pass raises: hooks are removed, timm's ``fused_attn`` flags and Hugging Face's attention
implementation are set back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

if TYPE_CHECKING:
    from lightning_explain.functional.vit_layouts import ViTLayout

__all__ = ["capture_attention", "select_layers"]


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


def select_layers(depth: int, layers: Sequence[int] | None) -> list[int]:
    """Block indices ``layers`` (negative counts from the end) as sorted non-negative indices; None: all."""
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
    on_layer: Callable[[Tensor], None] | None = None,
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
        on_layer: called with each layer's attention as soon as the layer has run, INSTEAD of appending it to the
            list (which then stays empty): a consumer that folds each layer into a running result (see
            :class:`~lightning_explain.functional.attention_fold.AttentionFold`) keeps no layer after it is used.

    Yields:
        The list that the pass fills with ``[B, heads, T, T]`` attention tensors (empty with ``on_layer``).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32).eval()
        >>> with capture_attention(model) as attentions:
        ...     _ = model(torch.rand(1, 3, 32, 32))
        >>> len(attentions), tuple(attentions[0].shape), tuple(attentions[1].shape)
        (2, (1, 2, 17, 17), (1, 2, 17, 17))
    """
    if layout is None:
        from lightning_explain.functional.vit_layouts import vit_layout

        layout = vit_layout(model)
    named = dict(model.named_modules())
    modules = [named[layout.attention_names[i]] for i in select_layers(layout.depth, layers)]
    attentions: list[Tensor] = []
    handles: list[RemovableHandle] = []
    restores: list[Callable[[], None]] = []

    def record(weights: Any, where: str) -> None:
        if not isinstance(weights, Tensor) or weights.ndim != 4:
            got = list(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise RuntimeError(f"{where} returned no [B, heads, T, T] attention weights (got {got}).")
        kept = weights if keep_graph else weights.detach()
        if on_layer is not None:
            on_layer(kept)
        else:
            attentions.append(kept)

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
