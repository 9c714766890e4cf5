"""Input-gradient methods that need many passes: SmoothGrad and Integrated Gradients.

Both take the input gradient of each internal batch of at most ``internal_batch_size`` perturbed images from one
:func:`~lightning_explain.functional.hooked_pass.hooked_pass` (``torch.autograd.grad``: ``param.grad`` is never
touched), so memory stays bounded whatever the number of samples or steps.

- SmoothGrad (Smilkov et al. 2017): the mean of ``|dS/dx|`` over ``samples`` noisy copies
  ``x + N(0, sigma^2)``, ``sigma = noise_level * (max(x) - min(x))`` per image (or explicit ``noise``).
- Integrated Gradients (Sundararajan et al. 2017): ``(x - x0) * sum_i w_i dS/dx (x0 + a_i (x - x0))`` with the
  quadrature ``method`` (Riemann left/right/middle/trapezoid or Gauss-Legendre, as captum); completeness:
  the attributions sum to ``S(x) - S(x0)`` up to the quadrature error, reported as ``delta``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_explain.functional.context import model_dtype
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.progress import task
from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.targets import OutputTransform, TargetSpec, logits_from_output

__all__ = ["IG_METHODS", "SPECS", "integrated_gradients_attr", "quadrature", "smooth_grad_attr"]

#: Quadrature rules for Integrated Gradients.
IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of the integration rule over [0, 1]."""
    if steps < 1 or (method == "riemann_trapezoid" and steps < 2):
        raise ValueError(f"steps must be >= 1 (>= 2 for riemann_trapezoid); got {steps}.")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return [float(v) for v in 0.5 * (nodes + 1)], [float(v) for v in 0.5 * w]
    if method == "riemann_trapezoid":
        alphas = np.linspace(0, 1, steps)
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas.tolist(), weights.tolist()
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise ValueError(f"method must be one of {list(IG_METHODS)}; got {method!r}.")
    return [(i + offsets[method]) / steps for i in range(steps)], [1 / steps] * steps


def _input_gradients(
    model: nn.Module, batch: Tensor, spec: TargetSpec, rows: Tensor, output_transform: OutputTransform
) -> Tensor:
    grad = hooked_pass(model, batch, spec, rows=rows, grad_input=True, output_transform=output_transform).input_grad
    assert grad is not None
    return grad.float()


def smooth_grad_attr(
    model: nn.Module,
    inputs: Tensor,
    spec: TargetSpec,
    *,
    samples: int = 16,
    noise_level: float = 0.15,
    noise: Tensor | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    internal_batch_size: int = 32,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Mean ``|dS/dx|`` over noisy copies, ``[B, C, H, W]``; ``noise`` (``[samples, B, C, H, W]``) overrides.

    The noise is drawn on the CPU from ``generator``, or from a new one seeded with ``seed`` (never from the
    global RNG). Must run with gradients enabled (see :func:`lightning_explain.functional.context.grad_context`).
    """
    batch = inputs.shape[0]
    if noise is None:
        if samples < 1 or noise_level < 0:
            raise ValueError(f"samples must be >= 1 and noise_level >= 0; got {samples}, {noise_level}.")
        span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).view(1, batch, 1, 1, 1)
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        draw = torch.randn((samples, *inputs.shape), generator=gen, device="cpu").to(inputs.device)
        noise = draw * noise_level * span
    elif noise.shape[1:] != inputs.shape:
        raise ValueError(f"noise must be [samples, *inputs.shape]; got {list(noise.shape)}.")
    noisy = (inputs[None].float() + noise.float()).to(model_dtype(model))  # [S, B, C, H, W]
    flat = noisy.flatten(0, 1)
    rows = torch.arange(batch, device=inputs.device).repeat(noise.shape[0])
    total = torch.zeros(inputs.shape, device=inputs.device)
    chunk = max(1, internal_batch_size)
    with task("smoothgrad", total=math.ceil(flat.shape[0] / chunk)) as bar:
        for start in range(0, flat.shape[0], chunk):
            grad = _input_gradients(
                model, flat[start : start + chunk], spec, rows[start : start + chunk], output_transform
            )
            total.index_add_(0, rows[start : start + chunk], grad.abs())
            bar.update()
    return total / noise.shape[0]


def integrated_gradients_attr(
    model: nn.Module,
    inputs: Tensor,
    spec: TargetSpec,
    *,
    baseline: Tensor | float = 0.0,
    steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int = 32,
    output_transform: OutputTransform = None,
    with_delta: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Integrated Gradients ``[B, C, H, W]`` and the completeness error ``delta`` ``[B]`` (None without ``with_delta``).

    ``delta = sum(attributions) - (S(x) - S(x0))`` costs one more forward of ``2 B`` images. Must run with
    gradients enabled.
    """
    alphas, weights = quadrature(method, steps)
    x = inputs.float()
    x0 = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    diff = x - x0
    batch = x.shape[0]
    dtype = model_dtype(model)
    alpha_t = torch.tensor(alphas, device=x.device, dtype=x.dtype)
    weight_t = torch.tensor(weights, device=x.device, dtype=x.dtype)
    rows_all = torch.arange(batch, device=x.device).repeat(len(alphas))
    alpha_rows = alpha_t.repeat_interleave(batch)
    weight_rows = weight_t.repeat_interleave(batch)
    total = torch.zeros_like(x)
    chunk = max(1, internal_batch_size)
    with task("integrated gradients", total=math.ceil(rows_all.numel() / chunk)) as bar:
        for start in range(0, rows_all.numel(), chunk):
            rows = rows_all[start : start + chunk]
            a = alpha_rows[start : start + chunk].view(-1, 1, 1, 1)
            points = (x0[rows] + a * diff[rows]).to(dtype)
            grad = _input_gradients(model, points, spec, rows, output_transform)
            total.index_add_(0, rows, grad * weight_rows[start : start + chunk].view(-1, 1, 1, 1))
            bar.update()
    attributions = diff * total
    if not with_delta:
        return attributions, None
    with torch.no_grad():
        ends = torch.cat([x, x0]).to(dtype)
        rows = torch.arange(batch, device=x.device).repeat(2)
        scores = spec.scores(logits_from_output(model(ends), output_transform).float(), rows)
    delta = attributions.flatten(1).sum(1) - (scores[:batch] - scores[batch:])
    return attributions, delta


def _saliency(ctx: MethodContext) -> Tensor:
    return ctx.input_grad.abs().amax(dim=1)


def _gradient_x_input(ctx: MethodContext) -> Tensor:
    return (ctx.input_grad * ctx.inputs.float()).sum(dim=1).abs()


def _smooth_grad(ctx: MethodContext, **options: Any) -> Tensor:
    return smooth_grad_attr(ctx.model, ctx.inputs, ctx.target, output_transform=ctx.output_transform, **options)


def _integrated_gradients(ctx: MethodContext, **options: Any) -> Tensor:
    attributions, _ = integrated_gradients_attr(
        ctx.model, ctx.inputs, ctx.target, output_transform=ctx.output_transform, with_delta=False, **options
    )
    return attributions


#: Saliency and gradient x input (from the shared pass's input gradient); SmoothGrad (``|.|`` averaged, max over
#: colour channels) and Integrated Gradients (``|sum over colour channels|``), with passes of their own.
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("saliency", _saliency, reads=frozenset({"input_grad"}), default=True, function="saliency"),
    MethodSpec(
        "gradxinput",
        _gradient_x_input,
        reads=frozenset({"input_grad"}),
        aliases=("gradient_x_input",),
        function="gradient_x_input",
    ),
    MethodSpec(
        "smoothgrad",
        _smooth_grad,
        own_passes=True,
        post=lambda attr: attr.amax(dim=1),
        options_from=smooth_grad_attr,
        engine_args=frozenset({"noise", "generator", "output_transform"}),
        function="smooth_grad",
    ),
    MethodSpec(
        "integrated_gradients",
        _integrated_gradients,
        own_passes=True,
        post=lambda attr: attr.sum(dim=1).abs(),
        aliases=("ig",),
        options_from=integrated_gradients_attr,
        engine_args=frozenset({"output_transform", "with_delta"}),
        function="integrated_gradients",
    ),
)
