"""The hooked pass: ONE forward with hooks, the target scores, ONE ``torch.autograd.grad`` call.

Every method that needs a layer's output, a gradient or the attention weights gets them from
:func:`hooked_pass` (as captum's layer methods get theirs from one ``compute_layer_gradients_and_eval``): the
CAM family, saliency and gradient x input, SmoothGrad and Integrated Gradients (per internal batch), gradient-
weighted rollout, token Grad-CAM and TCAV's layer gradients. Each method only says what it does with the result.

What the pass guarantees: the input is cloned inside ``inference_mode(False)`` (tensors made under inference mode
cannot be saved for backward) and set to ``requires_grad`` (a frozen backbone still gets a graph); gradients come
from ``torch.autograd.grad``, never ``.backward()``, so ``param.grad`` is untouched; hooks live for this pass only;
autocast and ``torch.compile`` are off, so the pass runs eagerly in the model's own dtype. No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lightning_explain.capture import LayerRecording, capture_attention, record_layer
from lightning_explain.functional.context import as_model_input, grad_context
from lightning_explain.functional.targets import OutputTransform, Targets, TargetSpec, read_output, select_scores
from lightning_explain.functional.vit_layouts import ViTLayout

if TYPE_CHECKING:  # attention_fold imports rollout, whose specs import this module
    from lightning_explain.functional.attention_fold import AttentionFold

__all__ = ["PassResult", "hooked_pass"]

#: Reads the recorded layer output after the forward (and checks its shape).
LayerReader = Callable[[LayerRecording], Tensor]


@dataclass
class PassResult:
    """What one hooked pass saw. Every tensor is detached; gradients are zeros where the score does not depend on
    the tensor (never None).

    Attributes:
        inputs: the images as fed to the model (a detached clone, in the model's dtype).
        logits: ``[B, C]`` fp32.
        classes: ``[B]`` the class explained per row (-1 where a targets callable chose the score).
        activations: each hooked layer's output in its own layout (e.g. ``[B, C, H, W]`` or ``[B, T, C]``).
        layer_grads: ``dS/d activation`` per hooked layer, same shapes, with ``grad_layer``.
        input_grad: ``dS/d inputs``, same shape as ``inputs``, with ``grad_input``.
        attentions: each captured layer's attention ``[B, heads, T, T]``, with an ``attention`` layout.
        attention_grads: ``dS/dA`` per captured layer, with ``grad_attention``.
        predicted: ``[B]`` the predicted class (for a dense output, the class covering most pixels).
    """

    inputs: Tensor
    logits: Tensor
    classes: Tensor
    activations: list[Tensor] = field(default_factory=list)
    layer_grads: list[Tensor] = field(default_factory=list)
    input_grad: Tensor | None = None
    attentions: list[Tensor] = field(default_factory=list)
    attention_grads: list[Tensor] = field(default_factory=list)
    predicted: Tensor | None = None

    @property
    def activation(self) -> Tensor | None:
        """The first hooked layer's output (None without a layer)."""
        return self.activations[0] if self.activations else None

    @property
    def layer_grad(self) -> Tensor | None:
        """The gradient of the first hooked layer's output (None without ``grad_layer``)."""
        return self.layer_grads[0] if self.layer_grads else None


def hooked_pass(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets | TargetSpec = None,
    *,
    layers: Sequence[tuple[str, nn.Module]] = (),
    read_layer: LayerReader = LayerRecording.last_tensor,
    attention: ViTLayout | None = None,
    grad_layer: bool = False,
    grad_input: bool = False,
    grad_attention: bool = False,
    rows: Tensor | None = None,
    output_transform: OutputTransform = None,
    attention_fold: AttentionFold | None = None,
) -> PassResult:
    """One forward pass of ``inputs`` with the requested hooks, then one ``autograd.grad`` of the summed scores.

    Args:
        model: any module returning logits (or an output ``output_transform`` maps to ``[B, C]`` logits). Its
            train/eval mode is left as it is.
        inputs: ``[B, C, H, W]`` images (any float dtype; cast to the model's).
        targets: what to explain per row (:data:`~lightning_explain.functional.targets.Targets`), or a
            :class:`~lightning_explain.functional.targets.TargetSpec` with ``rows`` for batched perturbations.
        layers: ``(name, module)`` pairs to record (from :func:`lightning_explain.capture.resolve_layer`).
        read_layer: how each recorded output is read and checked; the default takes the last call's tensor.
        attention: a ViT layout: record every block's attention weights.
        grad_layer: differentiate with respect to each layer's output.
        grad_input: differentiate with respect to the inputs.
        grad_attention: differentiate with respect to the attention weights (keeps them on the graph).
        rows: the image each row of ``inputs`` belongs to, for a ``TargetSpec``.
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.
        attention_fold: with ``attention``, fold each layer's attention into it as the layer runs instead of keeping
            every layer (``attentions`` stays empty); its gradient-weighted rollout, when asked for, is folded in
            the backward (see :class:`~lightning_explain.functional.attention_fold.AttentionFold`).

    Example:
        >>> import torch, torchvision
        >>> from lightning_explain.capture import resolve_layer
        >>> model = torchvision.models.resnet18(num_classes=4).eval()
        >>> out = hooked_pass(model, torch.rand(2, 3, 32, 32), 1, layers=[resolve_layer(model, "layer4")],
        ...                   grad_layer=True, grad_input=True)
        >>> out.activation.shape, out.layer_grad.shape, out.input_grad.shape, out.classes.tolist()
        (torch.Size([2, 512, 1, 1]), torch.Size([2, 512, 1, 1]), torch.Size([2, 3, 32, 32]), [1, 1])
    """
    if (grad_layer and not layers) or (grad_attention and attention is None):
        raise ValueError("a gradient with respect to a layer or the attention needs that layer or layout hooked.")
    fold_grad = attention_fold is not None and attention_fold.grad_rollout
    if attention_fold is not None and (attention is None or grad_attention):
        raise ValueError("attention_fold needs an attention layout and replaces grad_attention.")
    any_grad = grad_layer or grad_input or grad_attention or fold_grad
    with grad_context(inputs.device):
        x = as_model_input(inputs, model)
        if grad_input and not x.is_floating_point():
            raise TypeError(f"input gradients need floating-point images; got {x.dtype}.")
        x.requires_grad_(any_grad and x.is_floating_point())  # also gives a frozen backbone a graph
        with ExitStack() as hooks:
            recordings = [hooks.enter_context(record_layer(module, name)) for name, module in layers]
            attentions = (
                hooks.enter_context(
                    capture_attention(model, attention, keep_graph=grad_attention or fold_grad, on_layer=attention_fold)
                )
                if (attention is not None)
                else []
            )
            with torch.set_grad_enabled(any_grad):
                output = model(x)
        activations = [read_layer(recording) for recording in recordings]
        captured = attention_fold.count if attention_fold is not None else len(attentions)
        if attention is not None and captured != attention.depth:
            raise RuntimeError(f"captured {captured} attention layers, expected {attention.depth}.")
        read = read_output(output, output_transform)
        logits = read.logits
        if logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned {logits.shape[0]} rows of logits for {x.shape[0]} inputs.")
        scores, classes = select_scores(logits, targets, rows, read.predicted)
        result = PassResult(x.detach(), logits.detach().float(), classes)
        result.predicted = read.predicted
        result.activations = [a.detach() for a in activations]
        result.attentions = [a.detach() for a in attentions]
        if not any_grad:
            return result
        wrt = [
            *(activations if grad_layer else []),
            *([x] if grad_input else []),
            *(attentions if grad_attention else []),
        ]
        anchor: list[Tensor] = []  # what the folded attention gradients are found on the way to
        if attention_fold is not None and fold_grad and not grad_input:
            first = attention_fold.first
            anchor = [x] if x.requires_grad else [first] if first is not None else []
        grads = list(torch.autograd.grad(scores.sum(), [*wrt, *anchor], allow_unused=True))[: len(wrt)]
        if attention_fold is not None:
            attention_fold.finish()
        filled = [torch.zeros_like(t) if g is None else g.detach() for g, t in zip(grads, wrt, strict=True)]
        del output, logits, scores, read, anchor
    if grad_layer:
        result.layer_grads, filled = filled[: len(activations)], filled[len(activations) :]
    if grad_input:
        result.input_grad = filled.pop(0)
    result.attention_grads = filled
    return result
