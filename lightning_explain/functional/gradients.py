"""Every map from one hooked forward pass and one ``autograd.grad`` call, plus the multi-pass methods.

:func:`explain` is the engine: the CAM family, saliency, gradient x input and channel activations all come
from ONE forward pass (a hook on the target layer) and ONE ``torch.autograd.grad`` call; Score-CAM,
SmoothGrad, Integrated Gradients and Occlusion add their own batched passes after it. Pure tensor functions:
no Lightning import, no change to the model (no ``.backward()``, so ``param.grad`` is never touched; hooks
live for one pass). Maps are computed in fp32 with autocast off, also inside ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lightning_explain.capture import default_conv_layer, record_layer, resolve_layer
from lightning_explain.functional._common import (
    OutputTransform,
    Targets,
    TargetSpec,
    check_inputs,
    grad_context,
    logits_from_output,
    model_dtype,
    normalize_maps,
    resolve_targets,
    target_scores,
    upsample_maps,
)
from lightning_explain.functional.attention import (
    ViTLayout,
    attention_rollout,
    capture_attention,
    cls_attention,
    default_token_layer,
    grad_rollout,
    tokens_to_grid,
    vit_layout,
)
from lightning_explain.functional.cams import CAM_METHODS, GRADIENT_CAMS, cam_from_gradients, eigen_projection
from lightning_explain.functional.path import integrated_gradients_attr, smooth_grad_attr
from lightning_explain.functional.perturbation import Precision, occlusion_map, score_cam_map

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "LAYER_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "channel_activations",
    "default_layer",
    "eigen_cam",
    "explain",
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

#: Method names accepted by :func:`explain` (and ``ExplainCallback(methods=...)``).
METHODS: tuple[str, ...] = (
    *CAM_METHODS,
    "scorecam",
    "saliency",
    "gradxinput",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "activations",
    "attention",
    "rollout",
    "grad_rollout",
)
#: What :func:`explain` and the callback compute when not told otherwise: cheap, one pass.
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "saliency", "activations")
#: Methods that need extra passes (their cost grows with channels, samples, steps or windows).
EXPENSIVE_METHODS: tuple[str, ...] = ("scorecam", "smoothgrad", "integrated_gradients", "occlusion")
#: Options each expensive method takes in ``explain(options={method: {...}})``.
METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "scorecam": frozenset({"batch_size", "precision"}),
    "smoothgrad": frozenset({"samples", "noise_level", "seed", "internal_batch_size"}),
    "integrated_gradients": frozenset({"steps", "method", "baseline", "internal_batch_size"}),
    "occlusion": frozenset({"window", "stride", "baseline", "batch_size", "precision"}),
    "attention": frozenset({"layer"}),
    "rollout": frozenset({"head_fusion", "discard_ratio"}),
}
#: Methods that read a vision transformer's attention weights.
ATTENTION_METHODS: tuple[str, ...] = ("attention", "rollout", "grad_rollout")
_ALIASES = {"gradcam++": "gradcampp", "ig": "integrated_gradients", "gradient_x_input": "gradxinput"}
#: Methods that read the target layer.
LAYER_METHODS = frozenset({*CAM_METHODS, "scorecam", "activations"})
_INPUT_GRAD_METHODS = frozenset({"saliency", "gradxinput"})


def canonical_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Validate method names (aliases like ``"gradcam++"`` accepted), in order, without duplicates."""
    if isinstance(methods, str):
        methods = (methods,)
    names = [_ALIASES.get(m, m) for m in methods]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}; got {list(methods)}.")
    return tuple(dict.fromkeys(names))


def check_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate per-method options against :data:`METHOD_OPTIONS`."""
    checked: dict[str, dict[str, Any]] = {}
    for method, opts in (options or {}).items():
        name = _ALIASES.get(method, method)
        allowed = METHOD_OPTIONS.get(name)
        if allowed is None:
            raise ValueError(f"options are for {sorted(METHOD_OPTIONS)}; got options for {method!r}.")
        unknown = set(opts) - allowed
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for {name!r}; allowed: {sorted(allowed)}.")
        checked[name] = dict(opts)
    return checked


def find_vit_layout(model: nn.Module) -> ViTLayout | None:
    """The model's vision-transformer layout, or None when it is not a supported ViT."""
    try:
        return vit_layout(model)
    except ValueError:
        return None


def default_layer(model: nn.Module) -> str:
    """The layer explained when none is given: a working token layer of a ViT, else the last ``Conv2d``."""
    layout = find_vit_layout(model)
    return default_token_layer(model, layout) if layout is not None else default_conv_layer(model)[0]


def _finish(maps: Tensor, size: tuple[int, int], upsample: bool, normalize: bool) -> Tensor:
    if upsample:
        maps = upsample_maps(maps, size)
    return normalize_maps(maps) if normalize else maps


def explain(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    targets: Targets = None,
    *,
    top_k: int = 3,
    upsample: bool = True,
    normalize: bool = True,
    output_transform: OutputTransform = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Tensor]:
    """Compute every requested map; the one-pass methods share ONE forward and ONE ``autograd.grad`` call.

    Args:
        model: the classifier. Its train/eval mode is left as it is (the callback puts it in eval).
        inputs: floating-point images ``[B, C, H, W]``.
        layer: dotted module name or module for the CAMs and activations; None picks :func:`default_layer` (the
            last ``Conv2d``, or for a ViT the output of the second-to-last block). Token layers ``[B, T, C]`` of a
            ViT are reshaped to the patch grid (prefix tokens dropped).
        methods: any of :data:`METHODS`: ``gradcam``, ``gradcampp`` (alias ``gradcam++``), ``xgradcam``,
            ``layercam``, ``hirescam``, ``eigencam``, ``scorecam``, ``saliency``, ``gradxinput``,
            ``smoothgrad``, ``integrated_gradients``, ``occlusion``, ``activations``, and for vision
            transformers ``attention`` (class-token attention of ``options["attention"]["layer"]``, default the
            last; also gives ``attention_heads`` ``[B, heads, H, W]`` and ``attention_layers`` ``[B, L, H, W]``),
            ``rollout`` and ``grad_rollout``.
        targets: None (predicted class), an int, a tensor of one class index per sample, or a callable from
            logits ``[B, C]`` to per-sample scores ``[B]``.
        top_k: channels per image for ``"activations"``.
        upsample: resize layer-resolution maps to the input's ``H x W`` (bilinear).
        normalize: min-max normalise each map to [0, 1] (constant maps become zeros).
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.
        options: per expensive method, see :data:`METHOD_OPTIONS`, e.g.
            ``{"smoothgrad": {"samples": 8}, "occlusion": {"window": (8, 8), "stride": (4, 4)}}``.

    Returns:
        ``logits`` ``[B, C]``, ``targets`` ``[B]`` (class explained; -1 for a callable), a ``[B, H, W]`` map
        per method (``activations``: ``[B, k, H, W]`` with ``activation_channels`` ``[B, k]``;
        ). All fp32 and detached.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> out = explain(model, torch.rand(2, 3, 64, 64), "layer4")
        >>> out["gradcam"].shape, out["activations"].shape
        (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]))
    """
    wanted = canonical_methods(methods)
    opts = check_options(options)
    inputs = check_inputs(inputs)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    need_layer = bool(LAYER_METHODS.intersection(wanted))
    layer_grads = bool(set(GRADIENT_CAMS).intersection(wanted))
    input_grads = bool(_INPUT_GRAD_METHODS.intersection(wanted))
    attention_wanted = [m for m in ATTENTION_METHODS if m in wanted]
    layout = find_vit_layout(model) if attention_wanted or need_layer else None
    if attention_wanted and layout is None:
        raise ValueError(
            f"{attention_wanted} read a vision transformer's attention; {type(model).__name__} is not a supported "
            "ViT (torchvision VisionTransformer, timm VisionTransformer family, Hugging Face ViT)."
        )
    if need_layer:
        name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    keep_attention_graph = "grad_rollout" in wanted
    any_grad = layer_grads or input_grads or keep_attention_graph

    result: dict[str, Tensor] = {}
    with grad_context(inputs.device):
        # Clone inside inference_mode(False): tensors made under inference mode cannot be saved for backward.
        x = inputs.detach().clone().to(model_dtype(model))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        x.requires_grad_(any_grad)  # also gives a frozen backbone a graph to differentiate
        attention_capture: AbstractContextManager[list[Tensor]] = (
            capture_attention(model, layout, keep_graph=keep_attention_graph)
            if attention_wanted and layout is not None
            else nullcontext([])
        )
        with (
            torch.set_grad_enabled(any_grad),
            record_layer(module, name) if need_layer else nullcontext() as recording,
            attention_capture as attentions,
        ):
            output = model(x)
        activations = recording.feature_map(tokens=layout is not None) if recording is not None else None

        def as_grid(t: Tensor) -> Tensor:
            return tokens_to_grid(t, layout) if t.ndim == 3 and layout is not None else t

        logits = logits_from_output(output, output_transform)
        if logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned {logits.shape[0]} rows of logits for {x.shape[0]} inputs.")
        scores, classes = target_scores(logits, targets)
        result["logits"] = logits.detach().float()
        result["targets"] = classes
        act = as_grid(activations.detach()).float() if activations is not None else None

        if any_grad:
            wrt = [activations] if layer_grads and activations is not None else []
            wrt += [x] if input_grads else []
            wrt += list(attentions) if keep_attention_graph else []
            grads = torch.autograd.grad(scores.sum(), wrt, allow_unused=True)
            grads = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True))
            for method in (m for m in wanted if m in GRADIENT_CAMS):
                assert act is not None
                cam = cam_from_gradients(method, act, as_grid(grads[0]).float())
                result[method] = _finish(cam, size, upsample, normalize)
            if keep_attention_graph:
                assert layout is not None
                attention_grads = [g.float() for g in grads[len(grads) - len(attentions) :]]
                fused = grad_rollout([a.detach().float() for a in attentions], attention_grads, layout)
                result["grad_rollout"] = _finish(fused, size, upsample, normalize)
                grads = grads[: len(grads) - len(attentions)]
        if input_grads:
            grad_x = grads[-1].detach().float()
            if "saliency" in wanted:
                result["saliency"] = _finish(grad_x.abs().amax(dim=1), size, False, normalize)
            if "gradxinput" in wanted:
                attr = (grad_x * x.detach().float()).sum(dim=1).abs()
                result["gradxinput"] = _finish(attr, size, False, normalize)
        del output, logits, scores
        if attention_wanted:
            assert layout is not None
            _attention_maps(list(attentions), layout, wanted, opts, result, size, upsample, normalize)

        if "eigencam" in wanted:
            assert act is not None
            result["eigencam"] = _finish(torch.relu(eigen_projection(act)), size, upsample, normalize)
        if "activations" in wanted:
            assert act is not None
            k = min(top_k, act.shape[1])
            channels = act.mean(dim=(2, 3)).topk(k, dim=1).indices
            maps = act.gather(1, channels[:, :, None, None].expand(-1, -1, *act.shape[2:]))
            result["activations"] = _finish(maps, size, upsample, normalize)
            result["activation_channels"] = channels

        if set(EXPENSIVE_METHODS).intersection(wanted):
            spec = (
                TargetSpec(classes)
                if not callable(targets) or isinstance(targets, Tensor)
                else TargetSpec(None, targets)
            )
            plain = x.detach()
            _expensive(model, plain, act, spec, wanted, opts, output_transform, result, size, upsample, normalize)
    return result


def _attention_maps(
    attentions: list[Tensor],
    layout: ViTLayout,
    wanted: tuple[str, ...],
    opts: dict[str, dict[str, Any]],
    result: dict[str, Tensor],
    size: tuple[int, int],
    upsample: bool,
    normalize: bool,
) -> None:
    weights = [a.detach().float() for a in attentions]
    if "attention" in wanted:
        index = int(opts.get("attention", {}).get("layer", -1))
        if not -len(weights) <= index < len(weights):
            raise ValueError(f"options['attention']['layer']={index} is out of range for {len(weights)} layers.")
        heads = cls_attention(weights[index], layout)
        result["attention"] = _finish(heads.mean(dim=1), size, upsample, normalize)
        result["attention_heads"] = _finish(heads, size, upsample, normalize)
        per_layer = torch.stack([cls_attention(w, layout).mean(dim=1) for w in weights], dim=1)
        result["attention_layers"] = _finish(per_layer, size, upsample, normalize)
    if "rollout" in wanted:
        rolled = attention_rollout(weights, layout, **opts.get("rollout", {}))
        result["rollout"] = _finish(rolled, size, upsample, normalize)


def _expensive(
    model: nn.Module,
    x: Tensor,
    act: Tensor | None,
    spec: TargetSpec,
    wanted: tuple[str, ...],
    opts: dict[str, dict[str, Any]],
    output_transform: OutputTransform,
    result: dict[str, Tensor],
    size: tuple[int, int],
    upsample: bool,
    normalize: bool,
) -> None:
    if "scorecam" in wanted:
        assert act is not None
        cam = score_cam_map(model, x, act, spec, output_transform=output_transform, **opts.get("scorecam", {}))
        result["scorecam"] = _finish(cam, size, upsample, normalize)
    if "smoothgrad" in wanted:
        sg_opts = dict(opts.get("smoothgrad", {}))
        generator = torch.Generator().manual_seed(int(sg_opts.pop("seed", 0)))
        attr = smooth_grad_attr(model, x, spec, generator=generator, output_transform=output_transform, **sg_opts)
        result["smoothgrad"] = _finish(attr.amax(dim=1), size, False, normalize)
    if "integrated_gradients" in wanted:
        attr, _ = integrated_gradients_attr(
            model, x, spec, output_transform=output_transform, with_delta=False, **opts.get("integrated_gradients", {})
        )
        result["integrated_gradients"] = _finish(attr.sum(dim=1).abs(), size, False, normalize)
    if "occlusion" in wanted:
        occ_opts = dict(opts.get("occlusion", {}))
        for key in ("window", "stride"):
            if key in occ_opts:
                value = occ_opts[key]
                occ_opts[key] = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
        drop = occlusion_map(model, x, spec, output_transform=output_transform, **occ_opts)
        result["occlusion"] = _finish(torch.relu(drop), size, False, normalize)


def _single(
    method: str,
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    targets: Targets,
    upsample: bool,
    normalize: bool,
    output_transform: OutputTransform,
    options: Mapping[str, Any] | None = None,
) -> Tensor:
    return explain(
        model,
        inputs,
        layer,
        (method,),
        targets,
        upsample=upsample,
        normalize=normalize,
        output_transform=output_transform,
        options={method: options} if options else None,
    )[method]


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
    return _single("gradcam", model, inputs, layer, targets, upsample, normalize, output_transform)


class CamFunction(Protocol):
    """The signature shared by the one-layer CAM functions."""

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


def _cam_function(method: str, name: str, summary: str) -> CamFunction:
    def cam(
        model: nn.Module,
        inputs: Tensor,
        layer: str | nn.Module | None,
        targets: Targets = None,
        *,
        upsample: bool = True,
        normalize: bool = True,
        output_transform: OutputTransform = None,
    ) -> Tensor:
        return _single(method, model, inputs, layer, targets, upsample, normalize, output_transform)

    cam.__name__ = cam.__qualname__ = name
    cam.__doc__ = (
        f"{summary}, ``[B, H, W]``; arguments as :func:`grad_cam` (see :mod:`lightning_explain.functional.cams`)."
    )
    return cam


grad_cam_plus_plus = _cam_function("gradcampp", "grad_cam_plus_plus", "Grad-CAM++ (Chattopadhay et al. 2018)")
xgrad_cam = _cam_function("xgradcam", "xgrad_cam", "XGrad-CAM (Fu et al. 2020)")
layer_cam = _cam_function("layercam", "layer_cam", "LayerCAM (Jiang et al. 2021)")
hires_cam = _cam_function("hirescam", "hires_cam", "HiResCAM (Draelos & Carin 2020)")


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
    return _single("eigencam", model, inputs, layer, None, upsample, normalize, output_transform)


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
    return _single(
        "scorecam",
        model,
        inputs,
        layer,
        targets,
        upsample,
        normalize,
        output_transform,
        {"batch_size": batch_size, "precision": precision},
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
    return _single("saliency", model, inputs, None, targets, False, normalize, output_transform)


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
    inputs = check_inputs(inputs)
    with grad_context(inputs.device):
        x = inputs.detach().clone().to(model_dtype(model)).requires_grad_(True)
        scores, _ = target_scores(logits_from_output(model(x), output_transform), targets)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return (grad * x).detach().float()


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
    return out["activations"], out["activation_channels"]
