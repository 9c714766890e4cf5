"""Faithfulness of a map: does the model's score follow the pixels the map calls relevant?

A map can sit on the object and still not be what the model uses. Both tests below remove pixels in the map's
order and watch the softmax probability of the explained class (the class the map explains; the predicted one by
default), without gradients, in chunks of at most ``batch_size`` perturbed images per forward.

- Deletion and insertion (Petsiuk et al. 2018, "RISE"): ``steps`` equal slices of the pixels, most relevant first.
  Deletion replaces them by the baseline, one slice more at each step, from the image to the baseline; insertion
  starts from the baseline and puts the image's pixels back in the same order. The area under each curve of
  ``steps + 1`` probabilities (trapezoid rule on [0, 1]) is the score: a faithful map has a LOW deletion AUC (the
  probability falls as soon as its top pixels go) and a HIGH insertion AUC. Baseline ``"mean"`` (default): each
  channel's mean over the image; ``"blur"``: the image blurred by a Gaussian of std ``blur_sigma`` pixels (default
  a tenth of the shorter side; RISE's insertion baseline). A blur keeps what is coarse: a coloured patch keeps its
  colour, so a model that reads a colour cue still sees it after "deletion" (the demo's shortcut model: deletion
  AUC 0.98 with blur).
- ROAD, RemOve And Debias (Rong et al. 2022): the ``p`` percent most relevant (MoRF) or least relevant (LeRF)
  pixels are replaced by noisy linear imputation: each removed pixel becomes the weighted mean of its eight
  neighbours (weights 1/6 for the four sides, 1/12 for the diagonals, renormalised at the border), solved jointly
  for all removed pixels as one sparse linear system per image and channel, plus Gaussian noise of std ``noise``
  (absolute, in input units). The imputation leaks no shape through the removal mask, unlike a constant fill. The
  system is symmetric positive definite; it is solved by batched conjugate gradients (shifted adds, no
  sparse matrix, no SciPy), to a relative residual of 1e-5 (pytorch-grad-cam's direct ``spsolve`` agrees to ~1e-5).
  Faithful: a LOW probability after MoRF removal and a HIGH one after LeRF removal.

Pixels are ranked by the map, ties (a constant region) in a random order from a private generator seeded with
``seed``: the global RNG is never touched. An image whose map is constant or not finite has no order: its
values are NaN. The caller keeps the model in eval mode (the callbacks do).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    >>> images, maps = torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16)
    >>> scores = deletion_insertion(model.eval(), images, maps, steps=8)
    >>> sorted(scores), scores["deletion_auc"].shape
    (['deletion_auc', 'insertion_auc'], torch.Size([2]))
    >>> road(model, images, maps, percentiles=(20, 80), order="lerf").shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain.functional.context import model_dtype
from lightning_explain.functional.progress import task
from lightning_explain.functional.targets import OutputTransform, check_classes, class_indices, logits_from_output

__all__ = [
    "BASELINES",
    "DEFAULT_PERCENTILES",
    "ROAD_ORDERS",
    "deletion_insertion",
    "deletion_insertion_curves",
    "impute",
    "pixel_ranks",
    "road",
]

Baseline = Literal["blur", "mean"]
Order = Literal["morf", "lerf"]
#: What removed pixels become in deletion / what insertion starts from.
BASELINES: tuple[str, ...] = ("blur", "mean")
#: ROAD's orders: most relevant first, least relevant first.
ROAD_ORDERS: tuple[str, ...] = ("morf", "lerf")
#: Percentages of pixels ROAD removes by default.
DEFAULT_PERCENTILES: tuple[int, ...] = (10, 30, 50, 70, 90)


def _neighbours(z: Tensor) -> Tensor:
    """Noisy linear imputation's weighted sum of the eight neighbours (Rong et al. 2022): sides 1/6, diagonals
    1/12; zero outside the image. Shifted adds (faster than a grouped 3x3 convolution on the CPU)."""
    p = F.pad(z, (1, 1, 1, 1))
    sides = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return sides / 6 + corners / 12


def _check(inputs: Tensor, maps: Tensor, batch_size: int) -> None:
    if inputs.ndim != 4 or not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating-point images [B, C, H, W]; got {inputs.dtype} {list(inputs.shape)}.")
    if tuple(maps.shape) != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(
            f"maps must be [B, H, W] = {[inputs.shape[0], *inputs.shape[-2:]]}, one per image at the input's size; "
            f"got {list(maps.shape)} (upsample layer-resolution maps first)."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")


def _ordered(maps: Tensor) -> Tensor:
    """Which maps have an order: finite and not constant ``[B]``."""
    flat = maps.flatten(1)
    return torch.isfinite(flat).all(1) & (flat.amax(1) > flat.amin(1))


def pixel_ranks(maps: Tensor, generator: torch.Generator) -> Tensor:
    """Rank of each pixel ``[B, H*W]``, 0 for the most relevant; ties in a random order drawn from ``generator``."""
    flat = torch.nan_to_num(maps.flatten(1).float(), nan=0.0)
    shuffle = torch.randperm(flat.shape[1], generator=generator, device=generator.device).to(flat.device)
    order = shuffle[torch.argsort(-flat[:, shuffle], dim=1, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def _blur(images: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _baseline(images: Tensor, baseline: str, blur_sigma: float | None) -> Tensor:
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    sigma = blur_sigma if blur_sigma is not None else min(images.shape[-2:]) / 10
    if sigma <= 0:
        raise ValueError(f"blur_sigma must be > 0; got {blur_sigma}.")
    return _blur(images, sigma)


def _classes(model: nn.Module, inputs: Tensor, targets: int | Tensor | None, transform: OutputTransform) -> Tensor:
    logits = logits_from_output(model(inputs), transform)
    if targets is None:
        return logits.argmax(dim=1)
    return check_classes(class_indices(targets, inputs.shape[0], inputs.device), logits.shape[1])


class _Probability:
    """Softmax probability of each row's class, in chunks of at most ``batch_size`` images."""

    def __init__(self, model: nn.Module, classes: Tensor, transform: OutputTransform) -> None:
        self.model, self.classes, self.transform = model, classes, transform

    def __call__(self, batch: Tensor, rows: Tensor) -> Tensor:
        logits = logits_from_output(self.model(batch), self.transform).float()
        return torch.softmax(logits, dim=1).gather(1, self.classes[rows][:, None]).squeeze(1)


def deletion_insertion_curves(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: int | Tensor | None = None,
    *,
    steps: int = 16,
    baseline: Baseline = "mean",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The deletion and the insertion curve ``[B, steps + 1]``: the explained class's probability after removing
    (inserting) ``round(s * H * W / steps)`` pixels, ``s = 0 .. steps``, most relevant first. NaN rows for maps
    without an order. See the module docstring for the baselines."""
    _check(inputs, maps, batch_size)
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    batch, _, height, width = inputs.shape
    device = inputs.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        images = inputs.detach().to(model_dtype(model))
        ranks = pixel_ranks(maps.to(device), generator)
        base = _baseline(images, baseline, blur_sigma)
        counts = torch.round(torch.arange(steps + 1, device=device) * (height * width / steps)).long()
        prob = _Probability(model, _classes(model, images, targets, output_transform), output_transform)
        total = 2 * batch * (steps + 1)  # job j: curve j // (B * (S+1)), image (j // (S+1)) % B, step j % (S+1)
        curves = torch.empty(total, device=device)
        with task("deletion/insertion", total=math.ceil(total / batch_size)) as bar:
            for start in range(0, total, batch_size):
                jobs = torch.arange(start, min(start + batch_size, total), device=device)
                insert, rows, step = jobs // (batch * (steps + 1)), (jobs // (steps + 1)) % batch, jobs % (steps + 1)
                chosen = (ranks[rows] < counts[step][:, None]).view(-1, 1, height, width)
                changed = torch.where(insert.bool().view(-1, 1, 1, 1), ~chosen, chosen)
                curves[jobs] = prob(torch.where(changed, base[rows], images[rows]), rows)
                bar.update()
    deletion, insertion = curves.view(2, batch, steps + 1)
    nan = torch.tensor(float("nan"), device=device)
    ordered = _ordered(maps.to(device))[:, None]
    return torch.where(ordered, deletion, nan), torch.where(ordered, insertion, nan)


def deletion_insertion(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: int | Tensor | None = None,
    *,
    steps: int = 16,
    baseline: Baseline = "mean",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Per-image ``deletion_auc`` and ``insertion_auc`` ``[B]`` in [0, 1] (Petsiuk et al. 2018): the mean over the
    curves of :func:`deletion_insertion_curves` by the trapezoid rule. Lower deletion, higher insertion = more
    faithful. ``2 * B * (steps + 1)`` forwards. NaN for maps without an order (constant or not finite)."""
    curves = deletion_insertion_curves(
        model,
        inputs,
        maps,
        targets,
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        output_transform=output_transform,
        seed=seed,
    )
    deletion, insertion = ((c.sum(1) - (c[:, 0] + c[:, -1]) / 2) / steps for c in curves)
    return {"deletion_auc": deletion, "insertion_auc": insertion}


def impute(images: Tensor, removed: Tensor, *, tol: float = 1e-5, max_iter: int | None = None) -> Tensor:
    """Noise-free linear imputation: each ``removed`` pixel ``[B, H, W]`` (True) of ``images`` ``[B, C, H, W]``
    becomes the weighted mean of its in-image neighbours, all removed pixels solved together (batched conjugate
    gradients). Every image must keep at least one pixel."""
    height, width = images.shape[-2:]
    x = images.float()
    hole = removed.to(x.dtype)[:, None]
    neighbours = _neighbours
    weight = neighbours(torch.ones(1, 1, height, width, device=x.device))  # in-image weights per pixel

    def operator(z: Tensor) -> Tensor:  # (S - W) restricted to the removed pixels: symmetric positive definite
        return hole * (weight * z - neighbours(hole * z))

    rhs = hole * neighbours(x * (1 - hole))
    z = hole * rhs / weight
    residual = rhs - operator(z)
    direction = residual.clone()
    rr = (residual * residual).sum((2, 3), keepdim=True)
    stop = (tol * rhs.flatten(2).norm(dim=2)).clamp_min(1e-12)[..., None, None] ** 2
    for _ in range(max_iter if max_iter is not None else 4 * (height + width) + 100):
        if bool((rr <= stop).all()):
            break
        product = operator(direction)
        alpha = rr / (direction * product).sum((2, 3), keepdim=True).clamp_min(1e-30)
        z = z + alpha * direction
        residual = residual - alpha * product
        new = (residual * residual).sum((2, 3), keepdim=True)
        direction = residual + (new / rr.clamp_min(1e-30)) * direction
        rr = new
    return torch.where(hole.bool(), z, x).to(images.dtype)


def road(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: int | Tensor | None = None,
    *,
    percentiles: tuple[int | float, ...] = DEFAULT_PERCENTILES,
    order: Order = "morf",
    noise: float = 0.01,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    seed: int = 0,
) -> Tensor:
    """ROAD (Rong et al. 2022): the explained class's probability ``[B, P]`` after removing ``round(p% of H*W)``
    pixels, the most (``order="morf"``) or least (``"lerf"``) relevant, by noisy linear imputation. One imputation
    and one forward per image and percentile. NaN rows for maps without an order.

    pytorch-grad-cam's ``ROADMostRelevantFirst(percentile=100 - p)`` removes the same pixels (for maps without
    ties); it reports the change of the score instead of the probability itself.
    """
    _check(inputs, maps, batch_size)
    if order not in ROAD_ORDERS:
        raise ValueError(f"order must be one of {ROAD_ORDERS}; got {order!r}.")
    if not percentiles or not all(0 <= p < 100 for p in percentiles):
        raise ValueError(f"percentiles must be percentages in [0, 100); got {percentiles}.")
    batch, _, height, width = inputs.shape
    device = inputs.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        images = inputs.detach().to(model_dtype(model))
        ranks = pixel_ranks(maps.to(device) if order == "morf" else -maps.to(device), generator)
        counts = torch.tensor([round(p / 100 * height * width) for p in percentiles], device=device)
        prob = _Probability(model, _classes(model, images, targets, output_transform), output_transform)
        total = batch * len(percentiles)  # job j: image j // P, percentile j % P
        out = torch.empty(total, device=device)
        with task(f"ROAD {order}", total=math.ceil(total / batch_size)) as bar:
            for start in range(0, total, batch_size):
                jobs = torch.arange(start, min(start + batch_size, total), device=device)
                rows = jobs // len(percentiles)
                removed = (ranks[rows] < counts[jobs % len(percentiles)][:, None]).view(-1, height, width)
                filled = impute(images[rows], removed)
                jitter = torch.randn(filled.shape, generator=generator).to(device, filled.dtype)
                filled = torch.where(removed[:, None], filled + noise * jitter, filled)
                out[jobs] = prob(filled, rows)
                bar.update()
    values = out.view(batch, len(percentiles))
    return torch.where(_ordered(maps.to(device))[:, None], values, torch.tensor(float("nan"), device=device))
