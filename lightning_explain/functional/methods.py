"""One function per method, for use outside the callback: each is :func:`~lightning_explain.functional.explain`
(or the method's own passes) for a single method, with that method's options as keyword arguments.

Layer methods (the CAM family, Score-CAM, channel activations) take a ``layer``; input methods (saliency,
gradient x input, SmoothGrad, Integrated Gradients, Occlusion) take none. No Lightning import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lightning_explain.functional.context import check_inputs, grad_context
from lightning_explain.functional.engine import explain
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.input_gradients import integrated_gradients_attr, smooth_grad_attr
from lightning_explain.functional.maps import normalize_maps
from lightning_explain.functional.perturbation import Precision, occlusion_map
from lightning_explain.functional.targets import OutputTransform, Targets, resolve_targets

__all__ = [
    "channel_activations",
    "eigen_cam",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradient_x_input",
    "hires_cam",
    "integrated_gradients",
    "layer_cam",
    "occlusion",
    "saliency",
    "score_cam",
    "smooth_grad",
    "xgrad_cam",
]


def _single(
    method: str,
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    targets: Targets = None,
    *,
    options: Mapping[str, Any] | None = None,
    **explain_kwargs: Any,
) -> Tensor:
    """``explain(...)[method]`` for one method, with that method's ``options`` (``upsample``, ``normalize`` and
    ``output_transform`` go to :func:`~lightning_explain.functional.explain` as they are)."""
    opts = {method: options} if options else None
    return explain(model, inputs, layer, (method,), targets, options=opts, **explain_kwargs)[method]


class CamFunction(Protocol):
    """The signature shared by the one-layer CAM functions (:func:`grad_cam` and its variants)."""

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        layer: str | nn.Module | None,
        targets: Targets = None,
        *,
        upsample: bool = True,
        normalize: bool = True,
        output_transform: OutputTransform = None,
    ) -> Tensor: ...


def _cam_function(method: str, name: str, doc: str) -> CamFunction:
    def cam(
        model: nn.Module, inputs: Tensor, layer: str | nn.Module | None, targets: Targets = None, **kwargs: Any
    ) -> Tensor:
        return _single(method, model, inputs, layer, targets, **kwargs)

    cam.__name__ = cam.__qualname__ = name
    cam.__doc__ = doc
    return cam


def _variant(summary: str) -> str:
    return f"{summary}, ``[B, H, W]``; arguments as :func:`grad_cam` (see :mod:`lightning_explain.functional.cams`)."


grad_cam = _cam_function(
    "gradcam",
    "grad_cam",
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean(dS/dA_k) A_k)`` per sample, ``[B, H, W]``.

    Args: ``model``, ``inputs`` ``[B, C, H, W]``, ``layer`` (dotted name or module; None for the default layer),
    ``targets`` (None: the predicted class; an int; one class index per image; or a callable from logits to
    scores), and keyword-only ``upsample``, ``normalize`` and ``output_transform`` as in
    :func:`~lightning_explain.functional.explain`. With ``upsample=False, normalize=False`` it returns the raw
    ReLU'd map at the layer's resolution.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> grad_cam(model, torch.rand(2, 3, 64, 64), "layer4", upsample=False, normalize=False).shape
        torch.Size([2, 2, 2])
    """,
)
grad_cam_plus_plus = _cam_function("gradcampp", "grad_cam_plus_plus", _variant("Grad-CAM++ (Chattopadhay et al. 2018)"))
xgrad_cam = _cam_function("xgradcam", "xgrad_cam", _variant("XGrad-CAM (Fu et al. 2020)"))
layer_cam = _cam_function("layercam", "layer_cam", _variant("LayerCAM (Jiang et al. 2021)"))
hires_cam = _cam_function("hirescam", "hires_cam", _variant("HiResCAM (Draelos & Carin 2020)"))


def eigen_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    *,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> Tensor:
    """EigenCAM: ReLU of the first principal component of the layer's activations, ``[B, H, W]`` (no target)."""
    return _single(
        "eigencam", model, inputs, layer, upsample=upsample, normalize=normalize, output_transform=output_transform
    )


def score_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    targets: Targets = None,
    *,
    batch_size: int = 64,
    precision: Precision = "fp32",
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Score-CAM (Wang et al. 2020), ``[B, H, W]``: one no-grad forward per channel, ``batch_size`` at a time.

    ``precision="bf16"`` runs the masked passes under bfloat16 autocast: faster on CPUs with bf16 support, with
    a normalised map that differs from the fp32 one by about 1e-3.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> score_cam(model, torch.rand(1, 3, 32, 32), "layer4", batch_size=256).shape
        torch.Size([1, 32, 32])
    """
    options = {"batch_size": batch_size, "precision": precision}
    return _single(
        "scorecam",
        model,
        inputs,
        layer,
        targets,
        options=options,
        upsample=upsample,
        normalize=normalize,
        output_transform=output_transform,
    )


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
    return _single("saliency", model, inputs, None, targets, normalize=normalize, output_transform=output_transform)


def smooth_grad(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    samples: int = 16,
    noise_level: float = 0.15,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    internal_batch_size: int = 32,
    normalize: bool = True,
    output_transform: OutputTransform = None,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean ``|dS/dx|`` over noisy copies, max over channels, ``[B, H, W]``.

    The noise is ``N(0, (noise_level * (max(x) - min(x)))^2)`` per image, drawn from ``generator`` (never the
    global RNG), unless ``noise`` ``[samples, B, C, H, W]`` is given.
    """
    inputs = check_inputs(inputs)
    spec = resolve_targets(model, inputs, targets, output_transform)
    with grad_context(inputs.device):
        attr = smooth_grad_attr(
            model,
            inputs.detach().clone(),
            spec,
            samples=samples,
            noise_level=noise_level,
            noise=noise,
            generator=generator if generator is not None else torch.Generator().manual_seed(0),
            internal_batch_size=internal_batch_size,
            output_transform=output_transform,
        )
    maps = attr.amax(dim=1)
    return normalize_maps(maps) if normalize else maps


def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    baseline: Tensor | float = 0.0,
    steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int = 32,
    output_transform: OutputTransform = None,
    return_convergence_delta: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated Gradients (Sundararajan et al. 2017): attributions ``[B, C, H, W]``.

    With ``return_convergence_delta`` also the completeness error ``[B]``, ``attributions.sum() - (S(x) -
    S(baseline))`` (one more forward); it shrinks as ``steps`` grows. ``explain``'s ``integrated_gradients``
    map is ``|sum over channels|``.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> attr, delta = integrated_gradients(model, torch.rand(1, 3, 32, 32), steps=8, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([1, 3, 32, 32]), torch.Size([1]))
    """
    inputs = check_inputs(inputs)
    spec = resolve_targets(model, inputs, targets, output_transform)
    with grad_context(inputs.device):
        attr, delta = integrated_gradients_attr(
            model,
            inputs.detach().clone(),
            spec,
            baseline=baseline,
            steps=steps,
            method=method,
            internal_batch_size=internal_batch_size,
            output_transform=output_transform,
            with_delta=return_convergence_delta,
        )
    if delta is None:
        return attr.detach()
    return attr.detach(), delta.detach()


def gradient_x_input(
    model: nn.Module, inputs: Tensor, targets: Targets = None, *, output_transform: OutputTransform = None
) -> Tensor:
    """Gradient x Input: ``x * dS/dx``, ``[B, C, H, W]`` (signed; ``explain`` maps ``|sum over channels|``)."""
    passed = hooked_pass(model, check_inputs(inputs), targets, grad_input=True, output_transform=output_transform)
    assert passed.input_grad is not None
    return (passed.input_grad * passed.inputs).float()


def occlusion(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    window: tuple[int, int] = (16, 16),
    stride: tuple[int, int] = (8, 8),
    baseline: float = 0.0,
    batch_size: int = 64,
    precision: Precision = "fp32",
    output_transform: OutputTransform = None,
) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014): the mean target-score drop per pixel, ``[B, H, W]`` (signed).

    ``explain``'s ``occlusion`` map is the positive part, normalised. ``precision="bf16"`` runs the occluded
    passes under bfloat16 autocast (faster on CPUs with bf16 support, scores differ by about 1e-2).
    """
    inputs = check_inputs(inputs)
    spec = resolve_targets(model, inputs, targets, output_transform)
    with torch.inference_mode():
        return occlusion_map(
            model,
            inputs,
            spec,
            window=window,
            stride=stride,
            baseline=baseline,
            batch_size=batch_size,
            output_transform=output_transform,
            precision=precision,
        )


def channel_activations(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    top_k: int = 3,
    *,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
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
    assert out.activation_channels is not None
    return out["activations"], out.activation_channels
