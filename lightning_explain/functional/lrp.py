"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) for CNNs, with the composites zennit names.

The explained score's gradient (one-hot on the target logit) is the output relevance; it is passed back layer by
layer, each ``Conv2d`` / ``Linear`` redistributing its output relevance ``R`` to its input by a rule. With
``st(z) = z + s * sign(z)`` (``sign(0) = +1``, ``s`` the stabiliser, 1e-6), ``x+ = max(x, 0)``, ``x- = min(x, 0)``,
``W+``/``W-`` the positive/negative parts of the weights (bias likewise) and ``W^T g`` the backward of the layer
(its input gradient for output gradient ``g``):

- epsilon: ``R_in = x * W^T (R / st(Wx + b))`` (with ``epsilon`` as the stabiliser).
- z-plus: ``z = W+ x+ + W- x- + b+``; ``R_in = x+ * W+^T(R/st(z)) + x- * W-^T(R/st(z))``.
- alpha-beta (alpha - beta = 1): the positive part ``z+ = W+ x+ + W- x- + b+`` and the negative part
  ``z- = W- x+ + W+ x- + b-`` are redistributed separately, ``alpha * (...)(R/st(z+)) - beta * (...)(R/st(z-))``.
- gamma (generalised, Andeol et al. 2021): where the output is positive, ``R`` goes back through
  ``W + gamma W+`` for ``x+`` and ``W + gamma W-`` for ``x-``; where it is negative, the other way round.
- z-box (first layer, inputs bounded by ``low``/``high``): ``z = Wx + b - (W+ l + b+) - (W- h + b-)``;
  ``R_in = x * W^T g - l * W+^T g - h * W-^T g``, ``g = R / st(z)``.
- flat (first layer): every weight 1, no bias, inputs 1: ``R_in = 1^T (R / st(1 x))``, spread evenly over the
  receptive field.
- Average pooling (also adaptive) and residual additions ``a + b`` (two tensors of the same shape, e.g.
  ``out += identity`` in torchvision's ResNet blocks): ``R_a = a * R / st(a + b)`` (the z-rule without weights).
- ReLU, max pooling, dropout and flatten keep their gradient (for ReLU this equals passing ``R`` through: every
  rule above multiplies by the layer's input, which is 0 where the ReLU cut it).
- BatchNorm is merged into the ``Conv2d`` / ``Linear`` right before it (``W' = W * gamma / sqrt(var + eps)``,
  ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``) and the rule is applied to the merged layer.

The composites (:data:`COMPOSITES`): ``epsilon`` (epsilon everywhere), ``epsilon_plus_flat`` (zennit's
EpsilonPlusFlat: z-plus on convolutions, epsilon on linear layers, flat on the first layer), ``epsilon_gamma_box``
(EpsilonGammaBox: gamma on convolutions, epsilon on linear layers, z-box on the first convolution), and
``epsilon_alpha2_beta1`` (EpsilonAlpha2Beta1: alpha=2, beta=1 on convolutions, epsilon on linear layers). "First"
is the first such module in the model's module order, as zennit counts it.

How it runs: forward hooks on the model's leaf modules for ONE hooked pass (removed in ``finally``) replace each
layer's output by the same values carrying the rule's backward; a :class:`~torch.overrides.TorchFunctionMode`
does the same for tensor additions. No parameter, buffer or module is changed (merged weights are new tensors),
``param.grad`` is never touched. A leaf module that LRP cannot handle (e.g. ``Hardswish``, ``LayerNorm``, a
BatchNorm that does not follow a layer) raises a ValueError naming it. Operations written as functions rather than
modules (``torch.flatten``, ``F.relu``) keep their gradient; a ``x.mean((2, 3))`` global pooling would therefore not
follow the z-rule: use ``nn.AdaptiveAvgPool2d``. No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.targets import OutputTransform, Targets, TargetSpec

__all__ = ["COMPOSITES", "LRP_METHODS", "SPECS", "lrp", "lrp_maps", "lrp_rules"]

#: The composites, by name: which rule each kind of layer gets.
COMPOSITES: tuple[str, ...] = ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
#: The methods of :func:`~lightning_explain.functional.explain` computed here, and their composite.
LRP_METHODS: dict[str, str] = {
    "lrp_epsilon": "epsilon",
    "lrp_epsilon_plus_flat": "epsilon_plus_flat",
    "lrp_epsilon_gamma_box": "epsilon_gamma_box",
    "lrp_alpha_beta": "epsilon_alpha2_beta1",
}
#: Leaf modules whose gradient is kept (element-wise, or a selection of their input).
_PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Flatten, nn.Identity)
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _stabilise(z: Tensor, eps: float) -> Tensor:
    return z + eps * ((z == 0).to(z) + z.sign())


@dataclass(frozen=True)
class _Composite:
    conv: str  # rule of Conv2d layers (not first)
    linear: str  # rule of Linear layers (not first)
    first: str | None  # rule of the first layer, or None
    first_types: tuple[type[nn.Module], ...]


_RULES: dict[str, _Composite] = {
    "epsilon": _Composite("epsilon", "epsilon", None, ()),
    "epsilon_plus_flat": _Composite("zplus", "epsilon", "flat", (nn.Conv2d, nn.Linear)),
    "epsilon_gamma_box": _Composite("gamma", "epsilon", "zbox", (nn.Conv2d,)),
    "epsilon_alpha2_beta1": _Composite("alpha_beta", "epsilon", None, ()),
}


class _Relevance(torch.autograd.Function):
    """Forward: ``out`` as it is. Backward: the rule's input relevance for ``x`` (nothing for ``out``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor, rule: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.rule = rule
        return out.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None]:
        return ctx.rule(relevance), None, None


class _SumRelevance(torch.autograd.Function):
    """``a + b`` (in place in ``a`` when asked); backward: the z-rule without weights."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, inplace: bool, eps: float) -> Tensor:
        ctx.eps = eps
        ctx.parts = (a.detach().clone(), b.detach())
        if inplace:
            ctx.mark_dirty(a)
            return a.add_(b)
        return a + b

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, Tensor, None, None]:
        a, b = ctx.parts
        s = relevance / _stabilise(a + b, ctx.eps)
        return a * s, b * s, None, None


_ADDS: dict[Callable[..., Any], bool] = {
    torch.add: False,
    Tensor.add: False,
    Tensor.__add__: False,
    Tensor.__radd__: False,
    Tensor.__iadd__: True,
    Tensor.add_: True,
}


class _SumMode(TorchFunctionMode):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        inplace = _ADDS.get(func)
        if inplace is not None and len(args) == 2 and not kwargs and _residual(args[0], args[1]):
            return _SumRelevance.apply(args[0], args[1], inplace, self.eps)
        return func(*args, **kwargs)


def _residual(a: Any, b: Any) -> bool:
    """Two activations of the same shape on the graph (not a parameter, not a constant)."""
    return (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and not isinstance(a, nn.Parameter)
        and not isinstance(b, nn.Parameter)
        and a.shape == b.shape
        and a.is_floating_point()
        and a.requires_grad
        and b.requires_grad
    )


def _layer_fn(module: nn.Module) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"LRP supports Conv2d with zero padding only; got padding_mode={module.padding_mode!r}.")
        conv = module

        def fn(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)

        return fn
    return F.linear


def _pool_fn(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The pooling as a function (calling the module inside the backward would fire the hooks again)."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return lambda x: F.adaptive_avg_pool2d(x, size)
    assert isinstance(module, nn.AvgPool2d)
    p = module
    return lambda x: F.avg_pool2d(
        x, p.kernel_size, p.stride, p.padding, p.ceil_mode, p.count_include_pad, p.divisor_override
    )


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _backward(
    fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    terms: list[tuple[Tensor, Tensor, Tensor | None]],
    grads: Callable[[list[Tensor]], list[Tensor]],
) -> list[Tensor]:
    """``W_k^T g_k`` for each term ``(input_k, W_k, b_k)``, where ``g_k = grads(outputs)[k]``."""
    with torch.enable_grad():
        ins = [t[0].detach().requires_grad_() for t in terms]
        outs = [fn(i, w, b) for i, (_, w, b) in zip(ins, terms, strict=True)]
        return list(torch.autograd.grad(outs, ins, grads([o.detach() for o in outs])))


def _rule(
    name: str,
    fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    options: Mapping[str, Any],
) -> Callable[[Tensor], Tensor]:
    """The backward ``R -> R_in`` of rule ``name`` for a layer ``fn`` with parameters ``w``, ``b`` at input ``x``."""
    x = x.detach()
    s = float(options.get("stabilizer", 1e-6))
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn, bp, bn = w.clamp(min=0), w.clamp(max=0), _pos(b), _neg(b)

    def epsilon(r: Tensor) -> Tensor:
        eps = float(options.get("epsilon", 1e-6))
        (g,) = _backward(fn, [(x, w, b)], lambda o: [r / _stabilise(o[0], eps)])
        return x * g

    def zplus(r: Tensor) -> Tensor:
        g = _backward(fn, [(xp, wp, bp), (xn, wn, None)], lambda o: [r / _stabilise(o[0] + o[1], s)] * 2)
        return xp * g[0] + xn * g[1]

    def alpha_beta(r: Tensor) -> Tensor:
        alpha, beta = float(options.get("alpha", 2.0)), float(options.get("beta", 1.0))
        terms = [(xp, wp, bp), (xn, wn, None), (xp, wn, bn), (xn, wp, None)]

        def grads(o: list[Tensor]) -> list[Tensor]:
            return [r / _stabilise(o[0] + o[1], s)] * 2 + [r / _stabilise(o[2] + o[3], s)] * 2

        g = _backward(fn, terms, grads)
        return alpha * (xp * g[0] + xn * g[1]) - beta * (xp * g[2] + xn * g[3])

    def gamma(r: Tensor) -> Tensor:
        k = float(options.get("gamma", 0.25))
        up, down = w + k * wp, w + k * wn
        up_b = None if b is None else b + k * bp  # type: ignore[operator]
        down_b = None if b is None else b + k * bn  # type: ignore[operator]
        with torch.no_grad():
            out = fn(x, w, b)
        terms = [(xp, up, up_b), (xn, down, None), (xp, down, down_b), (xn, up, None)]

        def grads(o: list[Tensor]) -> list[Tensor]:
            positive = (out > 0).to(r) * r / _stabilise(o[0] + o[1], s)
            negative = (out < 0).to(r) * r / _stabilise(o[2] + o[3], s)
            return [positive, positive, negative, negative]

        g = _backward(fn, terms, grads)
        return xp * g[0] + xn * g[1] + xp * g[2] + xn * g[3]

    def zbox(r: Tensor) -> Tensor:
        low = torch.as_tensor(options.get("low", 0.0), dtype=x.dtype, device=x.device).expand_as(x)
        high = torch.as_tensor(options.get("high", 1.0), dtype=x.dtype, device=x.device).expand_as(x)
        terms = [(x, w, b), (low, wp, bp), (high, wn, bn)]
        g = _backward(fn, terms, lambda o: [r / _stabilise(o[0] - o[1] - o[2], s)] * 3)
        return x * g[0] - low * g[1] - high * g[2]

    def flat(r: Tensor) -> Tensor:
        ones = torch.ones_like(x)
        (g,) = _backward(fn, [(ones, torch.ones_like(w), None)], lambda o: [r / _stabilise(o[0], s)])
        return g

    rules: dict[str, Callable[[Tensor], Tensor]] = {
        "epsilon": epsilon,
        "zplus": zplus,
        "alpha_beta": alpha_beta,
        "gamma": gamma,
        "zbox": zbox,
        "flat": flat,
    }
    return rules[name]


def _merged(layer: nn.Module, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``layer`` followed by the eval-mode BatchNorm ``norm``, as new tensors."""
    assert isinstance(norm, _NORMS) and isinstance(layer, nn.Conv2d | nn.Linear)
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("LRP merges BatchNorm with running statistics only (track_running_stats=True).")
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        weight = layer.weight * scale.view(shape)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(norm.running_mean)
        bias = (bias - norm.running_mean) * scale
        if norm.bias is not None:
            bias = bias + norm.bias
    return weight.detach(), bias.detach()


def lrp_rules(composite: str) -> dict[str, str | None]:
    """Which rule each kind of layer gets under ``composite``.

    Example:
        >>> lrp_rules("epsilon_plus_flat")
        {'conv': 'zplus', 'linear': 'epsilon', 'first': 'flat'}
    """
    if composite not in _RULES:
        raise ValueError(f"composite must be one of {COMPOSITES}; got {composite!r}.")
    spec = _RULES[composite]
    return {"conv": spec.conv, "linear": spec.linear, "first": spec.first}


class _Hooks:
    """The forward hooks of one LRP pass: each layer's output carries its rule's backward."""

    def __init__(self, model: nn.Module, composite: str, options: Mapping[str, Any]) -> None:
        self.spec = _RULES[composite]
        self.options = options
        self.names = {id(m): name for name, m in model.named_modules()}
        self.first = next(
            (m for _, m in model.named_modules() if self.spec.first_types and isinstance(m, self.spec.first_types)),
            None,
        )
        # The last Conv2d/Linear call: (its output as returned, the module, its input) for a BatchNorm after it.
        self.last: tuple[Tensor, nn.Module, Tensor] | None = None

    def name(self, module: nn.Module) -> str:
        return self.names.get(id(module), type(module).__name__) or "<the model itself>"

    def rule_of(self, module: nn.Module) -> str:
        if module is self.first and self.spec.first is not None:
            return self.spec.first
        return self.spec.conv if isinstance(module, nn.Conv2d) else self.spec.linear

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        x = inputs[0] if inputs else None
        if isinstance(module, nn.Conv2d | nn.Linear):
            assert isinstance(x, Tensor)
            rule = _rule(self.rule_of(module), _layer_fn(module), x, module.weight, module.bias, self.options)
            result = _Relevance.apply(x, output, rule)
            self.last = (result, module, x)
            return result
        if isinstance(module, _NORMS):
            if self.last is None or x is not self.last[0]:
                raise ValueError(
                    f"LRP cannot handle BatchNorm {self.name(module)!r}: it must follow a Conv2d or Linear directly, "
                    "so that it can be merged into that layer."
                )
            _, layer, layer_input = self.last
            weight, bias = _merged(layer, module)
            rule = _rule(self.rule_of(layer), _layer_fn(layer), layer_input, weight, bias, self.options)
            return _Relevance.apply(layer_input, output, rule)
        if isinstance(module, _POOLS):
            assert isinstance(x, Tensor)
            s = float(self.options.get("stabilizer", 1e-6))
            pool = _pool_fn(module)
            x0 = x.detach()

            def norm(r: Tensor) -> Tensor:
                (g,) = _backward(lambda i, w, b: pool(i), [(x0, x0, None)], lambda o: [r / _stabilise(o[0], s)])
                return x0 * g

            return _Relevance.apply(x, output, norm)
        if isinstance(module, _PASS_THROUGH):
            return None
        raise ValueError(
            f"LRP cannot handle layer {self.name(module)!r} ({type(module).__name__}). It supports Conv2d, Linear, "
            "BatchNorm right after one of them, ReLU, max and average pooling, dropout, flatten and residual "
            "additions (torchvision ResNet and VGG). Use another method (e.g. 'gradxinput' or "
            "'integrated_gradients') for this model."
        )


@contextmanager
def _lrp_pass(model: nn.Module, composite: str, options: Mapping[str, Any]) -> Iterator[None]:
    """Inside the block, a pass through ``model`` propagates relevance by ``composite``; hooks removed on exit."""
    hooks = _Hooks(model, composite, options)
    handles = [m.register_forward_hook(hooks) for m in model.modules() if not list(m.children())]
    try:
        with _SumMode(float(options.get("stabilizer", 1e-6))):
            yield
    finally:
        for handle in handles:
            handle.remove()


#: The options each composite reads (stabilizer: 1e-6; epsilon: 1e-6; gamma: 0.25; low/high: the inputs' range).
COMPOSITE_OPTIONS: dict[str, frozenset[str]] = {
    "epsilon": frozenset({"epsilon", "stabilizer"}),
    "epsilon_plus_flat": frozenset({"epsilon", "stabilizer"}),
    "epsilon_gamma_box": frozenset({"epsilon", "stabilizer", "gamma", "low", "high"}),
    "epsilon_alpha2_beta1": frozenset({"epsilon", "stabilizer"}),
}


def lrp(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets | TargetSpec = None,
    *,
    composite: str = "epsilon_plus_flat",
    output_transform: OutputTransform = None,
    **options: Any,
) -> Tensor:
    """Relevance of each input value ``[B, C, H, W]`` (signed) for the explained score, from one hooked pass.

    Args:
        model: a CNN of Conv2d, Linear, BatchNorm (after a Conv2d/Linear), ReLU, pooling and residual additions, in
            eval mode (BatchNorm is merged with its running statistics).
        inputs: ``[B, C, H, W]`` float images.
        targets: as :func:`~lightning_explain.functional.explain` (None: the predicted class).
        composite: one of :data:`COMPOSITES` (see the module docstring).
        output_transform: maps the model's output to ``[B, C]`` logits.
        **options: ``epsilon`` (1e-6), ``stabilizer`` (1e-6), ``gamma`` (0.25), and for ``epsilon_gamma_box`` the
            input bounds ``low`` and ``high`` (numbers or tensors broadcastable to the inputs; default the inputs'
            minimum and maximum over the batch).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 3)).eval()
        >>> lrp(model, torch.rand(1, 3, 16, 16), 0, composite="epsilon_gamma_box").shape
        torch.Size([1, 3, 16, 16])
    """
    lrp_rules(composite)
    unknown = set(options) - COMPOSITE_OPTIONS[composite]
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for composite {composite!r}.")
    inputs = check_inputs(inputs)
    opts = dict(options)
    if composite == "epsilon_gamma_box":
        opts.setdefault("low", float(inputs.min()))
        opts.setdefault("high", float(inputs.max()))
    with _lrp_pass(model, composite, opts):
        passed = hooked_pass(model, inputs, targets, grad_input=True, output_transform=output_transform)
    assert passed.input_grad is not None
    return passed.input_grad.float()


def lrp_maps(
    model: nn.Module,
    inputs: Tensor,
    spec: TargetSpec,
    wanted: tuple[str, ...],
    options: Mapping[str, Mapping[str, Any]],
    *,
    output_transform: OutputTransform = None,
) -> dict[str, Tensor]:
    """``explain``'s raw maps ``[B, H, W]`` of the :data:`LRP_METHODS` in ``wanted``: the positive part of the
    relevance summed over colour channels (the evidence for the class; negative relevance speaks against it)."""
    raw: dict[str, Tensor] = {}
    for method, composite in LRP_METHODS.items():
        if method in wanted:
            relevance = lrp(
                model, inputs, spec, composite=composite, output_transform=output_transform, **options.get(method, {})
            )
            raw[method] = relevance.sum(dim=1).clamp_min(0)
    return raw


def _relevance(ctx: MethodContext, composite: str, options: dict[str, Any]) -> Tensor:
    """The LRP relevance ``[B, C, H, W]`` of ``composite`` for :func:`~lightning_explain.functional.explain`."""
    given = {name: value for name, value in options.items() if value is not None}
    return lrp(ctx.model, ctx.inputs, ctx.target, composite=composite, output_transform=ctx.output_transform, **given)


def _lrp_epsilon(ctx: MethodContext, *, epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Tensor:
    return _relevance(ctx, "epsilon", {"epsilon": epsilon, "stabilizer": stabilizer})


def _lrp_epsilon_plus_flat(ctx: MethodContext, *, epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Tensor:
    return _relevance(ctx, "epsilon_plus_flat", {"epsilon": epsilon, "stabilizer": stabilizer})


def _lrp_epsilon_gamma_box(
    ctx: MethodContext,
    *,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    gamma: float = 0.25,
    low: float | None = None,
    high: float | None = None,
) -> Tensor:
    options = {"epsilon": epsilon, "stabilizer": stabilizer, "gamma": gamma, "low": low, "high": high}
    return _relevance(ctx, "epsilon_gamma_box", options)


def _lrp_alpha_beta(ctx: MethodContext, *, epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Tensor:
    return _relevance(ctx, "epsilon_alpha2_beta1", {"epsilon": epsilon, "stabilizer": stabilizer})


def _positive_sum(relevance: Tensor) -> Tensor:
    """The map: the positive part of the relevance summed over colour channels (the evidence for the class)."""
    return relevance.sum(dim=1).clamp_min(0)


#: LRP in :func:`~lightning_explain.functional.explain`, one method per composite (see :data:`LRP_METHODS`).
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("lrp_epsilon", _lrp_epsilon, own_passes=True, post=_positive_sum, function="lrp"),
    MethodSpec(
        "lrp_epsilon_plus_flat",
        _lrp_epsilon_plus_flat,
        own_passes=True,
        post=_positive_sum,
        aliases=("lrp",),
        function="lrp",
    ),
    MethodSpec("lrp_epsilon_gamma_box", _lrp_epsilon_gamma_box, own_passes=True, post=_positive_sum, function="lrp"),
    MethodSpec(
        "lrp_alpha_beta",
        _lrp_alpha_beta,
        own_passes=True,
        post=_positive_sum,
        aliases=("lrp_alpha2_beta1",),
        function="lrp",
    ),
)
