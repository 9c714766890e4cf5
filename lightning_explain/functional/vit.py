"""Vision Transformer maps in one call: class-token attention, rollout, gradient-weighted rollout, token Grad-CAM.

Each is one pass of the model: attention and rollout a no-grad forward with the attention captured; gradient-
weighted rollout and token Grad-CAM the engine's one hooked pass (:func:`~lightning_explain.functional.explain`).
Maps are ``[B, gh, gw]`` fp32 on the patch grid; upsample them with
:func:`lightning_explain.functional.upsample_maps`. No Lightning import, no lasting change to the model.

Gradient maps of a freshly built torchvision ``VisionTransformer`` are all zero: torchvision zero-initialises the
classification head, so no gradient reaches the body until the head has trained.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    >>> vit_rollout(model.eval(), torch.rand(3, 3, 32, 32)).shape
    torch.Size([3, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_explain.capture import capture_attention, select_layers
from lightning_explain.functional.context import as_model_input, autocast_off, check_inputs
from lightning_explain.functional.engine import explain
from lightning_explain.functional.rollout import HeadFusion, attention_rollout, cls_attention
from lightning_explain.functional.targets import OutputTransform, Targets
from lightning_explain.functional.vit_layouts import ViTLayout, default_token_layer, vit_layout

__all__ = ["token_grad_cam", "vit_attention", "vit_grad_rollout", "vit_rollout"]


def _attention_pass(model: nn.Module, inputs: Tensor, layout: ViTLayout, layers: Sequence[int] | None) -> list[Tensor]:
    inputs = check_inputs(inputs)
    with torch.no_grad(), autocast_off(inputs.device):
        x = as_model_input(inputs, model)
        with capture_attention(model, layout, keep_graph=False, layers=layers) as attentions:
            model(x)
    expected = layout.depth if layers is None else len(select_layers(layout.depth, layers))
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
    vit_layout(model)  # a clear error for a model that is not a supported ViT
    return explain(
        model,
        inputs,
        None,
        ("grad_rollout",),
        targets,
        upsample=False,
        normalize=False,
        output_transform=output_transform,
    )["grad_rollout"]


def token_grad_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None = None,
    targets: Targets = None,
    *,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on a token layer, ``[B, gh, gw]`` fp32, ReLU'd, not normalised.

    :func:`~lightning_explain.functional.explain`'s ``gradcam`` at the layer's resolution: the layer's output tokens
    ``[B, T, C]`` and their gradient from the one hooked pass, both reshaped with :func:`tokens_to_grid`, and
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
    layout = vit_layout(model)
    if layer is None:
        layer = default_token_layer(model, layout)
    return explain(
        model, inputs, layer, ("gradcam",), targets, upsample=False, normalize=False, output_transform=output_transform
    )["gradcam"]
