"""Feature inversion (Mahendran & Vedaldi 2015): an input whose features at a layer match a target's. No Lightning.

Minimise ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + tv_weight * TV(x) + l2_weight * mean(x^2)`` over the input
``x`` only, with Adam, where ``phi`` is the layer's output. Gradients come from ``torch.autograd.grad`` with respect
to ``x``: the model's ``param.grad`` and ``requires_grad`` flags are never touched. The forward stops at the layer
(the rest of the network is not run), so inverting an early layer is cheap.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> out = invert_features(model, "layer1", torch.rand(1, 3, 32, 32), steps=5, progress=False)
    >>> out.image.shape, len(out.losses)
    (torch.Size([1, 3, 32, 32]), 5)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_explain.capture import StopForward, preserve_model_state, record_layer, resolve_layer, stop_after
from lightning_explain.functional.context import check_inputs, grad_context, model_dtype
from lightning_explain.functional.progress import TqdmReporter, current_reporter, reporting, task

__all__ = ["InversionResult", "invert_features", "total_variation"]


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels (TV with beta = 2), per image ``[B]``."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


@dataclass
class InversionResult:
    """The reconstruction ``[B, C, H, W]`` (detached), the loss per step, and the relative feature distance
    ``||phi(x) - phi(x0)|| / ||phi(x0)||`` per image of the initial and the final input ``[B]``."""

    image: Tensor
    losses: list[float]
    initial_distance: Tensor
    final_distance: Tensor


@contextmanager
def _features(model: nn.Module, layer: str | nn.Module) -> Iterator[Callable[[Tensor], Tensor]]:
    name, module = resolve_layer(model, layer)
    with record_layer(module, name, protect_from_inplace=False) as rec, stop_after(module, model):

        def run(x: Tensor) -> Tensor:
            rec.outputs.clear()
            with suppress(StopForward):
                model(x)
            return rec.feature_map(tokens=True)

        yield run


def invert_features(
    model: nn.Module,
    layer: str | nn.Module,
    image: Tensor,
    *,
    steps: int = 200,
    lr: float = 0.05,
    tv_weight: float = 1.0,
    l2_weight: float = 0.0,
    init: Tensor | None = None,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
    progress: bool | None = True,
) -> InversionResult:
    """Reconstruct ``image`` from ``layer``'s features.

    Args:
        model: the network (put in eval mode for the optimisation; every module's mode, ``requires_grad`` and
            ``.grad`` and the global RNG states are restored afterwards).
        layer: dotted name or module whose output ``phi`` is matched (``[B, C, H, W]`` or ``[B, T, C]``).
        image: the target images ``[B, C, H, W]``.
        steps: Adam steps.
        lr: Adam learning rate, in units of the input.
        tv_weight: weight of the total-variation prior (:func:`total_variation`); 0 switches it off.
        l2_weight: weight of ``mean(x^2)`` (keeps the input small).
        init: the starting input; default small Gaussian noise around the mean of ``image`` from a private
            generator seeded with ``seed`` (the global RNG is not used).
        seed: seed of that generator.
        bounds: clamp the input to ``(low, high)`` after each step (e.g. the normalised pixel range).
        progress: True shows a tqdm bar on stderr (unless a reporter of
            :mod:`~lightning_explain.functional.progress` is installed, which then shows it), False shows nothing;
            None leaves it to the installed reporter (the callbacks install one that follows the Trainer's bar).

    Returns:
        :class:`InversionResult`.
    """
    image = check_inputs(image)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    if tv_weight < 0 or l2_weight < 0 or lr <= 0:
        raise ValueError(f"lr must be > 0 and tv_weight, l2_weight >= 0; got {lr}, {tv_weight}, {l2_weight}.")
    device, dtype = image.device, model_dtype(model)
    if init is None:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(image.shape, generator=g).to(device)
        init = image.detach().mean(dim=(1, 2, 3), keepdim=True) + 0.1 * image.detach().std() * noise
    elif init.shape != image.shape:
        raise ValueError(f"init has shape {list(init.shape)}; it must match image {list(image.shape)}.")
    losses: list[float] = []
    with preserve_model_state(model), grad_context(device), _features(model, layer) as features:
        with torch.no_grad():
            target = features(image.detach().clone().to(dtype)).detach().float()
        norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        x = init.detach().clone().to(dtype).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)

        def distance(inp: Tensor) -> Tensor:
            diff: Tensor = (features(inp).float() - target).flatten(1).pow(2).sum(1)
            return diff / norm

        with torch.no_grad():
            initial = distance(x).sqrt()
        reporter = current_reporter() if progress is not False else None
        if progress and reporter is None:
            reporter = TqdmReporter(delay=0)
        with reporting(reporter), task("feature inversion", total=steps) as bar:
            for _ in range(steps):
                loss = (
                    distance(x)
                    + tv_weight * total_variation(x.float())
                    + l2_weight * x.float().pow(2).flatten(1).mean(1)
                )
                total = loss.sum()
                (grad,) = torch.autograd.grad(total, [x])
                x.grad = grad
                optimizer.step()
                x.grad = None
                if bounds is not None:
                    with torch.no_grad():
                        x.clamp_(*bounds)
                losses.append(float(total.detach()))
                bar.update()
        with torch.no_grad():
            final = distance(x).sqrt()
    return InversionResult(x.detach(), losses, initial.detach(), final.detach())
