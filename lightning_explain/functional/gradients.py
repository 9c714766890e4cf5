"""Grad-CAM, saliency and channel activations from one hooked forward pass and one ``autograd.grad`` call.

Pure tensor functions: no Lightning import, no change to the model (no ``.backward()``, so ``param.grad`` is
never touched; hooks live for one pass). Maps are computed in fp32 with autocast off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain.capture import default_conv_layer, record_layer, resolve_layer
from lightning_explain.functional._common import (
    OutputTransform,
    Targets,
    check_inputs,
    logits_from_output,
    model_dtype,
    normalize_maps,
    target_scores,
    upsample_maps,
)

__all__ = ["METHODS", "channel_activations", "explain", "grad_cam", "saliency"]

#: Method names accepted by :func:`explain`.
METHODS: tuple[str, ...] = ("gradcam", "saliency", "activations")
_LAYER_METHODS = frozenset({"gradcam", "activations"})
_GRAD_METHODS = frozenset({"gradcam", "saliency"})


def _cam_weights_gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM channel weights (Selvaraju et al. 2017): the spatial mean of the gradient."""
    del activations
    return gradients.mean(dim=(2, 3))


def cam_from_weights(activations: Tensor, weights: Tensor) -> Tensor:
    """``ReLU(sum_k w_k A_k)``: the CAM at the layer's resolution, ``[B, h, w]``."""
    return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}; got {list(methods)}.")
    return tuple(dict.fromkeys(methods))


def _autocast_off(device: torch.device) -> Any:
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def explain(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None = None,
    methods: Sequence[str] = METHODS,
    targets: Targets = None,
    *,
    top_k: int = 3,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> dict[str, Tensor]:
    """Compute every requested map from ONE forward pass and ONE ``torch.autograd.grad`` call.

    Args:
        model: the classifier. Its train/eval mode is left as it is (the callback puts it in eval).
        inputs: floating-point images ``[B, C, H, W]``.
        layer: dotted module name or module for Grad-CAM and activations; None picks the last ``Conv2d``.
        methods: any of ``"gradcam"``, ``"saliency"``, ``"activations"``.
        targets: None (predicted class), an int, a tensor of one class index per sample, or a callable from
            logits ``[B, C]`` to per-sample scores ``[B]``.
        top_k: channels per image for ``"activations"``.
        upsample: resize layer-resolution maps to the input's ``H x W`` (bilinear).
        normalize: min-max normalise each map to [0, 1] (constant maps become zeros).
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.

    Returns:
        ``logits`` ``[B, C]``, ``targets`` ``[B]`` (class explained; -1 for a callable), and per method:
        ``gradcam`` ``[B, H, W]``, ``saliency`` ``[B, H, W]``, ``activations`` ``[B, k, H, W]`` with
        ``activation_channels`` ``[B, k]``. All fp32 and detached.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> out = explain(model, torch.rand(2, 3, 64, 64), "layer4")
        >>> out["gradcam"].shape, out["activations"].shape
        (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]))
    """
    wanted = _check_methods(methods)
    inputs = check_inputs(inputs)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    need_layer = bool(_LAYER_METHODS.intersection(wanted))
    need_grad = bool(_GRAD_METHODS.intersection(wanted))
    if need_layer:
        name, module = default_conv_layer(model) if layer is None else resolve_layer(model, layer)

    result: dict[str, Tensor] = {}
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(_autocast_off(inputs.device))
        # Clone inside inference_mode(False): tensors made under inference mode cannot be saved for backward.
        x = inputs.detach().clone().to(model_dtype(model))
        if need_grad:
            x.requires_grad_(True)
        with record_layer(module, name) if need_layer else nullcontext() as recording:
            output = model(x)
        activations = recording.feature_map() if recording is not None else None
        logits = logits_from_output(output, output_transform)
        if logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned {logits.shape[0]} rows of logits for {x.shape[0]} inputs.")
        scores, classes = target_scores(logits, targets)
        result["logits"] = logits.detach().float()
        result["targets"] = classes

        size = (int(x.shape[-2]), int(x.shape[-1]))
        if need_grad:
            wrt = [x] if activations is None or "gradcam" not in wanted else [activations, x]
            grads = torch.autograd.grad(scores.sum(), wrt, allow_unused=True)
            grads = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True))
            if "gradcam" in wanted:
                assert activations is not None
                act, grad = activations.detach().float(), grads[0].float()
                cam = cam_from_weights(act, _cam_weights_gradcam(act, grad))
                if upsample:
                    cam = upsample_maps(cam, size)
                result["gradcam"] = normalize_maps(cam) if normalize else cam
            if "saliency" in wanted:
                sal = grads[-1].detach().float().abs().amax(dim=1)
                result["saliency"] = normalize_maps(sal) if normalize else sal

        if "activations" in wanted:
            assert activations is not None
            act = activations.detach().float()
            k = min(top_k, act.shape[1])
            channels = act.mean(dim=(2, 3)).topk(k, dim=1).indices
            maps = act.gather(1, channels[:, :, None, None].expand(-1, -1, *act.shape[2:]))
            if upsample:
                maps = upsample_maps(maps, size)
            result["activations"] = normalize_maps(maps) if normalize else maps
            result["activation_channels"] = channels
    return result


def grad_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    targets: Targets = None,
    *,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean(dS/dA_k) A_k)`` per sample, ``[B, H, W]``.

    With ``upsample=False, normalize=False`` it returns the raw ReLU'd map at the layer's resolution.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> grad_cam(model, torch.rand(2, 3, 64, 64), "layer4", upsample=False, normalize=False).shape
        torch.Size([2, 2, 2])
    """
    return explain(
        model,
        inputs,
        layer,
        ("gradcam",),
        targets,
        upsample=upsample,
        normalize=normalize,
        output_transform=output_transform,
    )["gradcam"]


def saliency(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Saliency (Simonyan et al. 2014): ``|dS/dx|``, max over colour channels, ``[B, H, W]``.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> saliency(model, torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """
    return explain(model, inputs, None, ("saliency",), targets, normalize=normalize, output_transform=output_transform)[
        "saliency"
    ]


def channel_activations(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    top_k: int = 3,
    *,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: Callable[[Any], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``top_k`` channels of ``layer`` with the highest mean activation, per image.

    Returns:
        ``(maps, channels)``: maps ``[B, k, H, W]`` (each normalised on its own) and channel indices ``[B, k]``.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> maps, channels = channel_activations(model, torch.rand(2, 3, 64, 64), "layer3", top_k=4)
        >>> maps.shape, channels.shape
        (torch.Size([2, 4, 64, 64]), torch.Size([2, 4]))
    """
    out = explain(
        model,
        inputs,
        layer,
        ("activations",),
        top_k=top_k,
        upsample=upsample,
        normalize=normalize,
        output_transform=output_transform,
    )
    return out["activations"], out["activation_channels"]
