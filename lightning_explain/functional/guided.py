"""Guided backpropagation, deconvnet and guided Grad-CAM: input gradients with the ReLU's backward rule changed.

- Guided backpropagation (Springenberg et al. 2015): through every ReLU only positive gradient flows, and only
  where the ReLU's input was positive: ``g_in = ReLU(g_out) * [x > 0]``.
- Deconvnet (Zeiler & Fergus 2014, as framed by Springenberg et al.): the ReLU of the backward signal alone,
  whatever the forward input was: ``g_in = ReLU(g_out)``.
- Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map upsampled to the input
  (bilinear, half-pixel centres), pixel by pixel.

:func:`relu_rule` changes the rule for the duration of one block and nothing else: a
:class:`~torch.overrides.TorchFunctionMode` routes every ReLU call made inside it (``nn.ReLU`` modules, which call
``F.relu``; ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu`` and ``Tensor.relu_``; in-place
ones stay in place) through a custom autograd function with the modified backward. No module, function or hook is
patched, so there is nothing to restore: leaving the block (also by an exception) pops the mode. ReLUs written
another way (``clamp(min=0)``, ``F.threshold``, a fused kernel) keep their ordinary gradient. No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_explain.functional.cams import cam_from_gradients
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.maps import upsample_maps
from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.targets import OutputTransform, Targets, TargetSpec

__all__ = [
    "GUIDED_METHODS",
    "RULES",
    "SPECS",
    "Rule",
    "deconvnet",
    "guided_backprop",
    "guided_cam_product",
    "guided_grad_cam",
    "relu_rule",
    "rule_gradients",
]

Rule = Literal["guided", "deconvnet"]
#: The modified ReLU backward rules.
RULES: tuple[str, ...] = ("guided", "deconvnet")


class _RuleReLU(torch.autograd.Function):
    """ReLU forward (in place when asked); backward by the chosen rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: str, inplace: bool) -> Tensor:
        out = x.relu_() if inplace else x.relu()
        if inplace:
            ctx.mark_dirty(x)
        ctx.guided = rule == "guided"
        ctx.save_for_backward(out if ctx.guided else None)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        positive = grad.clamp_min(0)
        if ctx.guided:
            (out,) = ctx.saved_tensors
            positive = positive * (out > 0)  # out > 0 exactly where the input was
        return positive, None, None


def _inplace_of_f_relu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))


#: The ReLU entry points the mode reroutes, and whether each one works in place.
_RELU_CALLS: dict[Callable[..., Any], Callable[[tuple[Any, ...], dict[str, Any]], bool]] = {
    torch.relu: lambda a, k: False,
    torch.Tensor.relu: lambda a, k: False,
    torch.relu_: lambda a, k: True,  # also F.relu_
    torch.Tensor.relu_: lambda a, k: True,
    F.relu: _inplace_of_f_relu,  # also every nn.ReLU module
}


class _ReluRuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        inplace = _RELU_CALLS.get(func)
        if inplace is None or not isinstance(args[0], Tensor) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        return _RuleReLU.apply(args[0], self.rule, inplace(args, kwargs))


@contextmanager
def relu_rule(rule: Rule) -> Iterator[None]:
    """Inside the block, every ReLU call's backward follows ``rule`` (``"guided"`` or ``"deconvnet"``).

    The forward is unchanged (the same values, in place where the call was). Nothing is patched: on exit, also by
    an exception, the ReLUs are ordinary again.

    Example:
        >>> x = torch.tensor([-1.0, 2.0], requires_grad=True)
        >>> with relu_rule("guided"):
        ...     torch.autograd.grad((torch.relu(x) * torch.tensor([3.0, -4.0])).sum(), x)[0].tolist()
        [0.0, 0.0]
        >>> with relu_rule("deconvnet"):
        ...     torch.autograd.grad((torch.relu(x) * torch.tensor([3.0, -4.0])).sum(), x)[0].tolist()
        [3.0, 0.0]
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")
    with _ReluRuleMode(rule):
        yield


def rule_gradients(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets | TargetSpec,
    rule: Rule,
    *,
    output_transform: OutputTransform = None,
) -> Tensor:
    """``dS/dx`` ``[B, C, H, W]`` (fp32) from one hooked pass with the ReLU backward ``rule``."""
    with relu_rule(rule):
        passed = hooked_pass(model, inputs, targets, grad_input=True, output_transform=output_transform)
    assert passed.input_grad is not None
    return passed.input_grad.float()


def guided_backprop(
    model: nn.Module, inputs: Tensor, targets: Targets = None, *, output_transform: OutputTransform = None
) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015), ``[B, C, H, W]`` (signed).

    ``explain``'s ``guided_backprop`` map is its absolute value, max over colour channels (as saliency), normalised.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(4))
        >>> guided_backprop(model, torch.rand(2, 3, 16, 16), 1).shape
        torch.Size([2, 3, 16, 16])
    """
    return rule_gradients(model, check_inputs(inputs), targets, "guided", output_transform=output_transform)


def deconvnet(
    model: nn.Module, inputs: Tensor, targets: Targets = None, *, output_transform: OutputTransform = None
) -> Tensor:
    """Deconvnet (Zeiler & Fergus 2014): the input gradient with ``ReLU(g_out)`` through every ReLU, ``[B, C, H, W]``.

    ``explain``'s ``deconvnet`` map is its absolute value, max over colour channels, normalised.
    """
    return rule_gradients(model, check_inputs(inputs), targets, "deconvnet", output_transform=output_transform)


def guided_grad_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module | None,
    targets: Targets = None,
    *,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM, ``[B, C, H, W]``.

    The Grad-CAM factor is the raw ``ReLU(sum_k w_k A_k)`` of ``layer`` (not normalised), resized to the input
    bilinearly (half-pixel centres). ``explain``'s ``guided_gradcam`` map is the absolute value, max over channels,
    normalised.
    """
    from lightning_explain.functional.engine import explain  # the engine imports this module

    inputs = check_inputs(inputs)
    kwargs: dict[str, Any] = {"upsample": False, "normalize": False, "output_transform": output_transform}
    cam = explain(model, inputs, layer, ("gradcam",), targets, **kwargs)
    called = callable(targets) and not isinstance(targets, Tensor)
    spec = TargetSpec(None, targets) if called else TargetSpec(cam.targets)  # type: ignore[arg-type]
    guided = rule_gradients(model, inputs, spec, "guided", output_transform=output_transform)
    return guided_cam_product(guided, cam["gradcam"])


def guided_cam_product(guided: Tensor, cam: Tensor) -> Tensor:
    """``guided`` ``[B, C, H, W]`` times ``cam`` ``[B, h, w]`` resized to ``H x W`` (bilinear)."""
    return guided * upsample_maps(cam.float(), (int(guided.shape[-2]), int(guided.shape[-1])))[:, None]


def _guided(ctx: MethodContext) -> Tensor:
    """The guided backpropagation gradient, one pass shared by ``guided_backprop`` and ``guided_gradcam``."""

    def make() -> Tensor:
        return rule_gradients(ctx.model, ctx.inputs, ctx.target, "guided", output_transform=ctx.output_transform)

    guided: Tensor = ctx.shared("guided", make)
    return guided


def _deconvnet(ctx: MethodContext) -> Tensor:
    return rule_gradients(ctx.model, ctx.inputs, ctx.target, "deconvnet", output_transform=ctx.output_transform)


def _guided_gradcam(ctx: MethodContext) -> Tensor:
    return guided_cam_product(_guided(ctx), cam_from_gradients("gradcam", ctx.activation, ctx.layer_grad))


def _colour_max(attributions: Tensor) -> Tensor:
    """``|attribution|``, max over colour channels (as saliency)."""
    return attributions.abs().amax(dim=1)


#: Guided backpropagation, deconvnet (one modified backward pass each) and guided Grad-CAM (guided backpropagation's
#: pass, shared, times the raw Grad-CAM of the shared pass's layer): ``|.|``, max over colour channels.
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "guided_backprop",
        _guided,
        own_passes=True,
        post=_colour_max,
        aliases=("guided_backpropagation",),
        function="guided_backprop",
    ),
    MethodSpec(
        "deconvnet", _deconvnet, own_passes=True, post=_colour_max, aliases=("deconvolution",), function="deconvnet"
    ),
    MethodSpec(
        "guided_gradcam",
        _guided_gradcam,
        reads=frozenset({"layer", "layer_grad"}),
        own_passes=True,
        post=_colour_max,
        aliases=("guided_grad_cam",),
        function="guided_grad_cam",
    ),
)

#: The methods of :func:`~lightning_explain.functional.explain` computed here.
GUIDED_METHODS = frozenset(spec.name for spec in SPECS)
