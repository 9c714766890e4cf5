"""The engine: every requested map from ONE hooked pass, plus the multi-pass methods after it.

:func:`explain` asks :func:`~lightning_explain.functional.hooked_pass.hooked_pass` once for everything the
one-pass methods need (the layer's output and gradient, the input gradient, the attention weights and their
gradients: the union of what the requested methods' specs ``read``, see :mod:`~lightning_explain.functional.spec`),
then calls each method's ``compute``: first those that only read the shared pass (the CAM family, saliency,
gradient x input, channel activations, the attention maps), then those with passes of their own (Score-CAM,
SmoothGrad, Integrated Gradients, Occlusion, LIME, guided backpropagation, deconvnet, guided Grad-CAM). Maps
are computed in fp32 with autocast off, also inside ``torch.inference_mode()``; ``param.grad`` is never touched.
No Lightning import.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lightning_explain.capture import resolve_layer
from lightning_explain.functional.attention_fold import AttentionFold
from lightning_explain.functional.context import check_inputs, grad_context
from lightning_explain.functional.hooked_pass import PassResult, hooked_pass
from lightning_explain.functional.layouts import (
    FeatureLayout,
    LayoutError,
    grid_pyramid,
    infer_layout,
    settle_layout,
    shape_pass,
)
from lightning_explain.functional.maps import normalize_maps, upsample_maps
from lightning_explain.functional.registry import DEFAULT_METHODS, PIXEL_METHODS, canonical_methods, check_options
from lightning_explain.functional.spec import MethodContext, method_spec
from lightning_explain.functional.target_layer import locate_layer
from lightning_explain.functional.targets import OutputTransform, Targets, TargetSpec
from lightning_explain.functional.vit_layouts import SUPPORTED_VITS, ViTLayout, find_vit_layout, inner_model

__all__ = ["PIXEL_METHODS", "ExplainResult", "explain", "layer_layout_of"]


@dataclass(frozen=True)
class ExplainResult(Mapping[str, Tensor]):
    """What :func:`explain` returns: one map per method, and what was explained.

    A read-only mapping from method name to map (``result["gradcam"]``, ``"saliency" in result``, ``list(result)``
    gives the methods in the order asked for), with the rest as attributes. Every tensor is fp32 (indices long) and
    detached.

    Attributes:
        maps: per method, ``[B, H, W]``; ``activations`` is ``[B, k, H, W]`` (the ``top_k`` channels).
        logits: ``[B, C]`` of the one pass.
        targets: ``[B]`` the class explained per image (-1 where a targets callable chose the score).
        activation_channels: ``[B, k]`` channel indices of ``activations`` (None without that method).
        attention_heads: ``[B, heads, H, W]`` class-token attention of each head of the chosen layer (with
            ``attention``).
        attention_layers: ``[B, L, H, W]`` head-averaged class-token attention of every layer (with ``attention``).
        predicted: ``[B]`` the predicted class (the argmax; for a dense output the class covering most pixels).
        layer: the layer the layer methods read (None without one); ``layout``: how its output was read.
    """

    maps: dict[str, Tensor]
    logits: Tensor
    targets: Tensor
    activation_channels: Tensor | None = None
    attention_heads: Tensor | None = field(default=None)
    attention_layers: Tensor | None = field(default=None)
    predicted: Tensor | None = field(default=None)
    layer: str | None = field(default=None)
    layout: FeatureLayout | None = field(default=None)

    def __getitem__(self, method: str) -> Tensor:
        return self.maps[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)


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
    layer_layout: str | None = None,
) -> ExplainResult:
    """Compute every requested map; the one-pass methods share ONE forward and ONE ``autograd.grad`` call.

    Args:
        model: the classifier. Its train/eval mode is left as it is (the callback puts it in eval).
        inputs: images ``[B, C, H, W]``: floating point, or integer (``uint8``) for a model that converts them itself
            (then only the layer and attention methods, which do not touch the pixels).
        layer: dotted module name or module for the CAMs and activations; None runs
            :func:`~lightning_explain.functional.target_layer.locate_layer` (two extra passes over two images): the
            last block or stage output with a spatial grid that the score depends on. Channels-last and token
            outputs are read on their grid (:mod:`~lightning_explain.functional.layouts`).
        methods: any of :data:`METHODS`: ``gradcam``, ``gradcampp`` (alias ``gradcam++``), ``xgradcam``,
            ``layercam``, ``hirescam``, ``eigencam``, ``scorecam``, ``saliency``, ``gradxinput``,
            ``smoothgrad``, ``integrated_gradients``, ``occlusion``, ``lime`` (positive superpixel weights),
            ``guided_backprop``, ``deconvnet``, ``guided_gradcam`` (``|.|``, max over colour channels, as
            ``saliency``), ``lrp_epsilon``, ``lrp_epsilon_plus_flat`` (alias ``lrp``), ``lrp_epsilon_gamma_box``,
            ``lrp_alpha_beta`` (:mod:`~lightning_explain.functional.lrp`), ``activations``, and for vision
            transformers ``attention`` (class-token attention of ``options["attention"]["layer"]``, default the
            last), ``rollout`` and ``grad_rollout``.
        targets: None (predicted class), an int, a tensor of one class index per sample, or a callable from
            logits ``[B, C]`` to per-sample scores ``[B]``.
        top_k: channels per image for ``"activations"``.
        upsample: resize layer-resolution maps to the input's ``H x W`` (bilinear).
        normalize: min-max normalise each map to [0, 1] (constant maps become zeros).
        output_transform: maps the model's output to ``[B, C]`` logits when it is not already a tensor.
        options: per expensive method, see :data:`METHOD_OPTIONS`, e.g.
            ``{"smoothgrad": {"samples": 8}, "occlusion": {"window": (8, 8), "stride": (4, 4)}}``.
        layer_layout: how ``layer``'s output is laid out: ``"nchw"`` ``[B, C, H, W]``, ``"nhwc"``
            ``[B, H, W, C]`` or ``"tokens"`` ``[B, T, C]``; None decides from the shape, the input's grid and the
            module (:func:`~lightning_explain.functional.layouts.infer_layout`), and raises when it cannot.

    Returns:
        An :class:`ExplainResult`: ``result[method]`` is the ``[B, H, W]`` map of each method (``activations``:
        ``[B, k, H, W]``), and ``result.logits`` ``[B, C]``, ``result.targets`` ``[B]`` (the class explained; -1
        for a callable), ``result.activation_channels`` ``[B, k]`` (with ``activations``),
        ``result.attention_heads`` and ``result.attention_layers`` (with ``attention``). All fp32 and detached.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> out = explain(model, torch.rand(2, 3, 64, 64), "layer4")
        >>> out["gradcam"].shape, out["activations"].shape, out.activation_channels.shape
        (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]), torch.Size([2, 3]))
    """
    wanted = canonical_methods(methods)
    opts = check_options(options)
    inputs = check_inputs(inputs, integer_ok=True)
    pixel_methods = [m for m in wanted if m in PIXEL_METHODS]
    if pixel_methods and not inputs.is_floating_point():
        raise TypeError(
            f"inputs have dtype {inputs.dtype}; {pixel_methods} differentiate or perturb the image itself and need "
            "floating-point images. Layer methods (the CAMs, activations) and attention maps work on integer images "
            "that the model converts itself. Convert them in the dataset transform (e.g. "
            "torchvision.transforms.v2.ToDtype(torch.float32, scale=True)) or pass a float probe."
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    specs = [spec for spec in map(method_spec, wanted) if spec is not None]
    reads = frozenset().union(*(spec.reads for spec in specs))
    need_layer = "layer" in reads
    attention_wanted = [spec.name for spec in specs if spec.attention]
    layout = find_vit_layout(model) if attention_wanted or need_layer else None
    if attention_wanted and layout is None:
        raise ValueError(
            f"{attention_wanted} read a vision transformer's attention; {type(inner_model(model)).__name__} is not a "
            f"supported ViT (supported: {SUPPORTED_VITS}). Models without a class token (Swin, PVT, MaxViT, "
            "hybrids) have no class-token attention: use Grad-CAM on a stage instead (methods=['gradcam'] with the "
            "default layer)."
        )
    if need_layer and layer is None:
        layer = locate_layer(model, inputs, targets, output_transform=output_transform).name
    resolved = resolve_layer(model, layer) if need_layer and layer is not None else None
    fold = None
    if attention_wanted:
        assert layout is not None
        fold = AttentionFold(
            layout,
            class_rows="attention" in wanted,
            rollout=opts.get("rollout", {}) if "rollout" in wanted else None,
            grad_rollout="grad_rollout" in wanted,
        )

    passed = hooked_pass(
        model,
        inputs,
        targets,
        layers=[resolved] if resolved is not None else [],
        read_layer=lambda recording: recording.feature_map(tokens=True),
        attention=layout if attention_wanted else None,
        grad_layer="layer_grad" in reads,
        grad_input="input_grad" in reads,
        # the fold takes each layer's attention gradient in the backward (attention_fold.py), so none is returned
        grad_attention=False,
        output_transform=output_transform,
        attention_fold=fold,
    )
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    # Passes of the methods' own explain the classes of the shared pass, or the same callable's scores.
    target = TargetSpec(passed.classes)
    if callable(targets) and not isinstance(targets, Tensor):
        target = TargetSpec(None, targets)
    ctx = MethodContext(model, passed.inputs, passed, target, output_transform, top_k, layout, attention_fold=fold)
    read: FeatureLayout | None = None
    if resolved is not None and passed.activation is not None:
        read = layer_layout_of(model, passed, resolved, layout, layer_layout)
        ctx.layer_output = read.to_nchw(passed.activation).float()
        if passed.layer_grad is not None:
            ctx.layer_output_grad = read.to_nchw(passed.layer_grad).float()
    maps: dict[str, Tensor] = {}
    views: dict[str, Tensor] = {}
    # The methods that read only the shared pass first, then those with passes of their own (gradients on).
    for spec in sorted(specs, key=lambda spec: spec.own_passes):
        with grad_context(inputs.device) if spec.own_passes else nullcontext():
            raw = spec.run(ctx, opts.get(spec.name, {}))
        maps[spec.name] = _finish(raw, size, upsample and spec.at_layer, normalize)
        views.update({k: _finish(v, size, upsample and spec.at_layer, normalize) for k, v in ctx.views.items()})
        ctx.views.clear()
    return ExplainResult(
        maps={m: maps[m] for m in wanted if m in maps},
        logits=passed.logits,
        targets=passed.classes,
        activation_channels=ctx.extras.get("activation_channels"),
        attention_heads=views.get("attention_heads"),
        attention_layers=views.get("attention_layers"),
        predicted=passed.predicted,
        layer=resolved[0] if resolved is not None else None,
        layout=read,
    )


def layer_layout_of(
    model: nn.Module,
    passed: PassResult,
    layer: tuple[str, nn.Module],
    vit: ViTLayout | None = None,
    forced: str | None = None,
) -> FeatureLayout:
    """How the hooked layer's output of ``passed`` reads as a spatial map (see :func:`infer_layout`).

    Tried first on the grids of the input (and a ViT's patch grid), which the pass gets for free. A shape that no
    such grid fits (a patch embedding of stride 14), or that two layouts fit (``[B, 16, 16, 16]``) with a module
    that does not settle it, costs one more no-grad forward of one image: it records every ``Conv2d``'s grid and
    the layouts of the outputs before the layer.
    """
    assert passed.activation is not None
    shape = passed.activation.shape
    prefix = vit.num_prefix_tokens if vit is not None and len(shape) == 3 and shape[1] == vit.num_tokens else None
    size = (int(passed.inputs.shape[-2]), int(passed.inputs.shape[-1]))
    seeds = {vit.grid} if vit is not None else set()
    name, module = layer
    try:
        return infer_layout(
            shape,
            grid_pyramid(size, seeds),
            module=module,
            name=f"target_layer {name!r}",
            forced=forced,
            prefix_tokens=prefix,
        )
    except LayoutError:
        pass
    calls, conv = shape_pass(model, passed.inputs[:1])
    return settle_layout(
        shape, grid_pyramid(size, seeds | conv), calls, name, module=module, forced=forced, prefix_tokens=prefix
    )
