"""LIME for images (Ribeiro et al. 2016): a weighted linear surrogate of the score over superpixels switched on/off.

Per image: the pixels are grouped into ``K`` superpixels (a regular ``rows x cols`` grid by default; SLIC from
scikit-image with ``segmentation="slic"``; or any ``feature_mask``); ``samples`` binary vectors ``z`` in
``{0, 1}^K`` are drawn (each superpixel kept with probability 1/2; the first sample is the image itself, all ones)
from a private ``torch.Generator`` (the global RNG is never drawn from); each ``z`` makes an image whose
switched-off superpixels take the ``baseline`` (the image's mean colour by default), and the model scores it
(no-grad, ``batch_size`` images per forward, so memory stays bounded). A ridge regression of the scores on ``z``,
each sample weighted by the exponential kernel ``exp(-d(z, 1)^2 / kernel_width^2)`` on the cosine distance
``d`` to the all-ones vector (the paper's ``pi_x``), gives one weight per superpixel; the map gives every pixel
its superpixel's weight. No Lightning import.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_explain.functional.context import check_inputs, model_dtype
from lightning_explain.functional.perturbation import Precision, _PerturbedForward
from lightning_explain.functional.progress import task
from lightning_explain.functional.spec import MethodContext, MethodSpec
from lightning_explain.functional.targets import OutputTransform, Targets, TargetSpec, resolve_targets

__all__ = [
    "SEGMENTATIONS",
    "SPECS",
    "Segmentation",
    "grid_segments",
    "lime",
    "lime_map",
    "slic_segments",
    "superpixels",
]

Segmentation = Literal["grid", "slic"]
#: How LIME groups pixels into superpixels.
SEGMENTATIONS: tuple[str, ...] = ("grid", "slic")


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be an int >= 1 or a pair (rows, cols) of them; got {value!r}.")
    return pair[0], pair[1]


def grid_segments(
    height: int, width: int, segments: int | tuple[int, int] = 8, device: torch.device | None = None
) -> Tensor:
    """A regular grid of ``rows x cols`` superpixels (``segments``; an int is square) as labels ``[H, W]``.

    Example:
        >>> grid_segments(4, 6, (2, 3)).tolist()
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]
    """
    rows, cols = _pair(segments, "segments")
    if rows > height or cols > width:
        raise ValueError(f"segments={(rows, cols)} is a finer grid than the {height}x{width} image.")
    r = torch.arange(height, device=device) * rows // height
    c = torch.arange(width, device=device) * cols // width
    return r[:, None] * cols + c[None, :]


def slic_segments(images: Tensor, segments: int = 64, compactness: float = 10.0) -> Tensor:
    """SLIC superpixels (Achanta et al. 2012, scikit-image's ``slic``) of each image, labels ``[B, H, W]``.

    Each image is min-max scaled to [0, 1] first (probe images are often normalised); about ``segments``
    superpixels per image. Needs scikit-image (``pip install 'lightning-explain[lime]'``).
    """
    try:
        from skimage.segmentation import slic
    except ImportError as err:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "LIME with segmentation='slic' needs scikit-image: pip install 'lightning-explain[lime]' (or "
            "pip install 'scikit-image>=0.22'); segmentation='grid' needs nothing."
        ) from err
    x = images.detach().float()
    low = x.flatten(1).amin(1)[:, None, None, None]
    span = (x.flatten(1).amax(1)[:, None, None, None] - low).clamp_min(1e-12)
    hwc = ((x - low) / span).permute(0, 2, 3, 1).cpu().numpy()
    options = {"n_segments": int(segments), "compactness": float(compactness), "start_label": 0, "channel_axis": -1}
    labels = [torch.from_numpy(slic(image, **options)).long() for image in hwc]
    return torch.stack(labels).to(images.device)


def superpixels(
    images: Tensor,
    segmentation: Segmentation = "grid",
    segments: int | tuple[int, int] = 8,
    compactness: float = 10.0,
) -> Tensor:
    """Superpixel labels ``[B, H, W]`` (from 0, consecutive per image) for :func:`lime_map`.

    ``segmentation="grid"``: ``segments`` is the grid (``8``: 8 x 8 cells); ``"slic"``: ``segments`` is about the
    number of superpixels (an int; a pair means ``rows * cols``).
    """
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}; got {segmentation!r}.")
    batch, _, height, width = images.shape
    if segmentation == "grid":
        return grid_segments(height, width, segments, images.device).expand(batch, -1, -1)
    rows, cols = _pair(segments, "segments")
    count = rows if isinstance(segments, int) else rows * cols
    return slic_segments(images, count, compactness)


def _relabel(mask: Tensor) -> tuple[Tensor, int]:
    """Labels made consecutive from 0, and their number."""
    values, inverse = torch.unique(mask, return_inverse=True)
    return inverse.view_as(mask), int(values.numel())


def _kernel(z: Tensor, width: float) -> Tensor:
    """``exp(-d^2 / width^2)``, ``d`` the cosine distance of each binary row of ``z`` to the all-ones vector."""
    on = z.sum(dim=1)
    distance = torch.where(on > 0, 1 - torch.sqrt(on / z.shape[1]), torch.ones_like(on))
    return torch.exp(-(distance**2) / width**2)


def _ridge(z: Tensor, y: Tensor, weights: Tensor, ridge: float) -> Tensor:
    """Weighted ridge regression with an unpenalised intercept (fp64, on the CPU); the ``K`` feature weights."""
    n, k = z.shape
    design = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)
    root = weights.sqrt()[:, None]
    lhs, rhs = root * design, root[:, 0] * y
    if ridge > 0:
        penalty = torch.cat([torch.eye(k, dtype=z.dtype), torch.zeros(k, 1, dtype=z.dtype)], dim=1)
        lhs = torch.cat([lhs, math.sqrt(ridge) * penalty])
        rhs = torch.cat([rhs, torch.zeros(k, dtype=z.dtype)])
    solution: Tensor = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution
    return solution[:k, 0]


def lime_map(
    model: nn.Module,
    inputs: Tensor,
    spec: TargetSpec,
    *,
    segments: int | tuple[int, int] = 8,
    segmentation: Segmentation = "grid",
    compactness: float = 10.0,
    feature_mask: Tensor | None = None,
    samples: int = 256,
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    baseline: float | Literal["mean"] = "mean",
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
    precision: Precision = "fp32",
) -> Tensor:
    """LIME weights per pixel ``[B, H, W]`` (signed: each pixel holds its superpixel's surrogate weight).

    ``feature_mask`` (``[H, W]`` or ``[B, H, W]`` integer labels) overrides ``segmentation``. ``generator``
    overrides ``seed``; the draws are made on the CPU, so a seed gives the same samples on every device.
    """
    if samples < 2 or batch_size < 1 or kernel_width <= 0 or ridge < 0:
        raise ValueError(
            "samples must be >= 2, batch_size >= 1, kernel_width > 0 and ridge >= 0; got "
            f"{samples}, {batch_size}, {kernel_width}, {ridge}."
        )
    if not (baseline == "mean" or isinstance(baseline, int | float)):
        raise ValueError(f"baseline must be 'mean' or a number; got {baseline!r}.")
    batch = inputs.shape[0]
    if feature_mask is None:
        masks = superpixels(inputs, segmentation, segments, compactness)
    else:
        if feature_mask.shape[-2:] != inputs.shape[-2:] or feature_mask.dtype.is_floating_point:
            raise ValueError(f"feature_mask must be integer labels [H, W] or [B, H, W]; got {feature_mask.shape}.")
        masks = feature_mask.to(inputs.device).long().expand(batch, *inputs.shape[-2:])
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    dtype = model_dtype(model)
    forward = _PerturbedForward(model, spec, output_transform, precision)
    out = torch.zeros(batch, *inputs.shape[-2:], device=inputs.device)
    chunks = math.ceil(samples / batch_size)
    with task("lime", total=batch * chunks) as bar, torch.inference_mode():
        for b in range(batch):
            labels, k = _relabel(masks[b])
            z = (torch.rand(samples, k, generator=gen) < 0.5).double()
            z[0] = 1  # the image itself
            image = inputs[b : b + 1].float()
            fill = image.mean(dim=(2, 3), keepdim=True) if baseline == "mean" else torch.full_like(image, baseline)
            rows = torch.full((batch_size,), b, dtype=torch.long, device=inputs.device)
            scores = torch.empty(samples, dtype=torch.float64)
            for start in range(0, samples, batch_size):
                keep = z[start : start + batch_size].to(inputs.device, torch.float32)[:, labels][:, None]
                masked = (image * keep + fill * (1 - keep)).to(dtype)
                scores[start : start + batch_size] = forward(masked, rows[: keep.shape[0]]).double().cpu()
                bar.update()
            weights = _ridge(z, scores, _kernel(z, kernel_width), ridge)
            out[b] = weights.float().to(inputs.device)[labels]
    return out


def lime(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets = None,
    *,
    segments: int | tuple[int, int] = 8,
    segmentation: Segmentation = "grid",
    compactness: float = 10.0,
    feature_mask: Tensor | None = None,
    samples: int = 256,
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    baseline: float | Literal["mean"] = "mean",
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    precision: Precision = "fp32",
    output_transform: OutputTransform = None,
) -> Tensor:
    """LIME (Ribeiro et al. 2016): each pixel gets its superpixel's surrogate weight, ``[B, H, W]`` (signed).

    ``explain``'s ``lime`` map is the positive part (the superpixels that raise the score), normalised. Costs
    ``samples`` no-grad forwards per image, ``batch_size`` at a time.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
        >>> weights = lime(model, torch.rand(1, 3, 16, 16), 2, segments=4, samples=32)
        >>> weights.shape, weights[0, :4, :4].unique().numel()  # one value per grid cell
        (torch.Size([1, 16, 16]), 1)
    """
    inputs = check_inputs(inputs)
    spec = resolve_targets(model, inputs, targets, output_transform)
    return lime_map(
        model,
        inputs,
        spec,
        segments=segments,
        segmentation=segmentation,
        compactness=compactness,
        feature_mask=feature_mask,
        samples=samples,
        kernel_width=kernel_width,
        ridge=ridge,
        baseline=baseline,
        seed=seed,
        generator=generator,
        batch_size=batch_size,
        output_transform=output_transform,
        precision=precision,
    )


def _lime(ctx: MethodContext, **options: Any) -> Tensor:
    return lime_map(ctx.model, ctx.inputs, ctx.target, output_transform=ctx.output_transform, **options)


#: LIME in :func:`~lightning_explain.functional.explain`: the positive part (the superpixels that raise the score).
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "lime",
        _lime,
        own_passes=True,
        post=torch.relu,
        options_from=lime_map,
        engine_args=frozenset({"feature_mask", "generator", "output_transform"}),
        function="lime",
    ),
)
