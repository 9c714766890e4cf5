"""Activation maximisation: synthesise the input a channel or a class responds to most. No Lightning.

Gradient ascent on an image (Erhan et al. 2009; Simonyan et al. 2014), with the regularisers that make the result
readable (Olah et al. 2017, "Feature Visualization", Distill): a random shift of the image at every step
(*jitter*, so that the unit cannot rely on high-frequency patterns tied to exact pixel positions), a
total-variation penalty, and optionally a *Fourier* parametrisation, in which the variables are the image's 2-D
spectrum scaled by ``1 / f ** decay_power`` so that a gradient step moves low frequencies more than high ones (a
decorrelated, better-conditioned space). Pixels are ``sigmoid`` of the parametrised image, in ``[0, 1]``; the model
sees them normalised with ``mean`` / ``std``.

Maximised, one image per unit, all in one batch: a channel's mean activation over the layer's grid (``nchw``,
``nhwc`` or token layouts, read as in :mod:`~lightning_explain.functional.layouts`), or a class's logit. Gradients
come from ``torch.autograd.grad`` with respect to the image variables only: every ``param.grad``, ``requires_grad``
flag, train/eval flag and the global RNGs are as before (the start image and the jitter come from a private
generator seeded with ``seed``, so the same seed gives the same images).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=3)
    >>> out = maximize_activation(model, "layer1", [0, 5], input_shape=(3, 32, 32), steps=3)
    >>> out.images.shape, out.initial.shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2]))
    >>> maximize_activation(model, classes=[2], input_shape=(3, 32, 32), steps=3).pixels.shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_explain.capture import StopForward, preserve_model_state, record_layer, resolve_layer, stop_after
from lightning_explain.functional.context import grad_context, model_dtype
from lightning_explain.functional.inversion import total_variation
from lightning_explain.functional.layouts import FeatureLayout, grid_pyramid, settle_layout, shape_pass
from lightning_explain.functional.progress import task
from lightning_explain.functional.targets import OutputTransform, read_output

__all__ = ["ActivationMaxResult", "count_units", "fourier_scale", "maximize_activation"]


@dataclass
class ActivationMaxResult:
    """What :func:`maximize_activation` made, one row per unit (detached).

    Attributes:
        images: ``[K, C, H, W]`` the synthesised inputs as the model takes them (normalised with ``mean``/``std``).
        pixels: ``[K, C, H, W]`` the same images in ``[0, 1]``, for display.
        initial: ``[K]`` each unit's target (mean channel activation or logit) on the start image.
        final: ``[K]`` the target on the final image (without jitter).
        history: the mean target over the units at each step (on the jittered images).
    """

    images: Tensor
    pixels: Tensor
    initial: Tensor
    final: Tensor
    history: list[float]


def fourier_scale(height: int, width: int, decay_power: float = 1.0) -> Tensor:
    """The per-frequency scale ``1 / max(f, 1 / max(H, W)) ** decay_power`` of an ``rfft2`` spectrum
    ``[H, W // 2 + 1]`` (``f`` in cycles per pixel), divided by its root mean square, so that a unit step of every
    coefficient moves the pixels about as much as a unit step of each pixel would.

    Example:
        >>> s = fourier_scale(8, 8)
        >>> s.shape, bool(s[0, 0] == s.max()), round(float(s.pow(2).mean()), 4)
        (torch.Size([8, 5]), True, 1.0)
    """
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    freq = (fy.pow(2) + fx.pow(2)).sqrt().clamp_min(1.0 / max(height, width))
    scale = freq.pow(-decay_power)
    out: Tensor = scale / scale.pow(2).mean().sqrt()
    return out


def is_int(value: object, minimum: int = 1) -> bool:
    """Whether ``value`` is an ``int`` (``bool`` excluded) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class _Image:
    """The optimised variables and their map to pixels in ``[0, 1]`` (pixel or Fourier parametrisation)."""

    def __init__(self, shape: tuple[int, int, int, int], fourier: bool, decay_power: float, g: torch.Generator):
        k, c, h, w = shape
        self.size = (h, w)
        self.scale: Tensor | None = None
        if fourier:
            self.scale = fourier_scale(h, w, decay_power)
            self.var = 0.01 * torch.randn(k, c, h, w // 2 + 1, 2, generator=g)
        else:
            self.var = 0.01 * torch.randn(shape, generator=g)

    def to(self, device: torch.device) -> _Image:
        self.var = self.var.to(device).requires_grad_(True)
        self.scale = self.scale.to(device) if self.scale is not None else None
        return self

    def pixels(self) -> Tensor:
        raw = self.var
        if self.scale is not None:
            spectrum = torch.view_as_complex(self.var) * self.scale
            raw = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(raw)


@dataclass
class _LayerRead:
    name: str
    module: nn.Module
    layout: FeatureLayout
    channels: int


def _read_layer(model: nn.Module, layer: str | nn.Module, x: Tensor, layer_layout: str | None) -> _LayerRead:
    """Resolve ``layer`` and read its layout and channel count from one no-grad pass of ``x`` (one image)."""
    name, module = resolve_layer(model, layer)
    calls, conv = shape_pass(model, x)
    shapes = [call.shape for call in calls if call.name == name and call.shape is not None]
    if not shapes:
        raise ValueError(
            f"layer {name!r} returned no tensor in a forward pass of a {list(x.shape[1:])} input (it is not called, "
            "or returns a tuple). Pick a layer that the model's forward() runs and that returns a feature map."
        )
    grids = grid_pyramid((int(x.shape[-2]), int(x.shape[-1])), conv)
    layout = settle_layout(shapes[0], grids, calls, name, module=module, forced=layer_layout)
    channels = shapes[0][1] if layout.kind == "nchw" else shapes[0][-1]
    return _LayerRead(name, module, layout, int(channels))


def _num_classes(model: nn.Module, x: Tensor, output_transform: OutputTransform) -> int:
    with grad_context(x.device), torch.no_grad():
        scores = read_output(model(x), output_transform)
    if scores.dense:
        raise ValueError(
            "class targets maximise a logit, but the model returns dense [B, C, H, W] scores. For a segmentation "
            "model maximise channels of its head instead: layer='<head layer>', channels=[...]."
        )
    return int(scores.logits.shape[1])


def _check_units(units: Sequence[int], available: int, what: str) -> list[int]:
    bad = [u for u in units if not is_int(u, minimum=0) or u >= available]
    if bad or not units:
        raise ValueError(
            f"{what} has {available} units (indices 0..{available - 1}); got {list(units)!r}"
            + (f", of which {bad} are out of range" if bad else "")
            + ". Choose indices in that range."
        )
    return list(units)


def _start_input(model: nn.Module, input_shape: Sequence[int], mean: Tensor, std: Tensor) -> Tensor:
    if len(input_shape) != 3 or not all(is_int(d) for d in input_shape):
        raise ValueError(f"input_shape must be [C, H, W] (positive ints); got {list(input_shape)!r}.")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    grey = torch.full((1, *input_shape), 0.5, device=device)
    return ((grey - mean.to(device)) / std.to(device)).to(model_dtype(model))


def count_units(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    *,
    input_shape: Sequence[int] = (3, 64, 64),
    layer_layout: str | None = None,
    output_transform: OutputTransform = None,
) -> int:
    """How many channels ``layer`` outputs (``layer=None``: how many classes the model scores), from one no-grad
    pass of a grey image of ``input_shape`` ``[C, H, W]``; model flags, ``.grad`` and RNGs restored.

    Raises:
        ValueError: naming the fix, for a layer that does not exist, is not called, or whose output is not a
            feature map, and for a model whose output is not ``[B, C]`` class scores (``layer=None``).

    Example:
        >>> import torchvision
        >>> count_units(torchvision.models.resnet18(num_classes=3), "layer2", input_shape=(3, 32, 32))
        128
    """
    x = _start_input(model, input_shape, torch.zeros(1), torch.ones(1))
    with preserve_model_state(model):
        if layer is None:
            return _num_classes(model, x, output_transform)
        return _read_layer(model, layer, x, layer_layout).channels


def maximize_activation(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    channels: Sequence[int] | None = None,
    *,
    classes: Sequence[int] | None = None,
    input_shape: Sequence[int] = (3, 64, 64),
    steps: int = 128,
    lr: float = 0.05,
    jitter: int = 4,
    tv_weight: float = 0.5,
    l2_weight: float = 0.0,
    fourier: bool = True,
    decay_power: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    layer_layout: str | None = None,
    output_transform: OutputTransform = None,
) -> ActivationMaxResult:
    """Synthesise, for each chosen channel of ``layer`` (or each chosen class), the input that maximises it.

    Maximises ``target_k(x_k) - tv_weight * TV(p_k) - l2_weight * mean((p_k - 0.5)^2)`` with Adam over the image
    variables, where ``p_k`` are the pixels in ``[0, 1]`` and ``x_k = (shift(p_k) - mean) / std`` what the model sees.

    Args:
        model: the network (in eval mode for the passes; every module's mode, ``requires_grad`` and ``.grad`` and
            the global RNG states are restored afterwards).
        layer: dotted name or module whose ``channels`` are maximised; None with ``classes``.
        channels: channel indices of ``layer``; one image each. Target: the channel's mean over the layer's grid.
        classes: class indices instead (target: the logit; the model must return ``[B, C]`` class scores).
        input_shape: ``[C, H, W]`` of the synthesised inputs (the size the model takes).
        steps: Adam steps (one forward + one ``autograd.grad`` of all the images each; the forward stops at
            ``layer``).
        lr: Adam learning rate.
        jitter: shift the image by up to this many pixels in each direction at every step (0: off).
        tv_weight: weight of the total-variation penalty on the pixels (mean squared neighbour difference).
        l2_weight: weight of the penalty ``mean((p - 0.5)^2)``, pulling pixels to mid-grey.
        fourier: optimise the image's spectrum scaled by ``1 / f ** decay_power`` (:func:`fourier_scale`) instead
            of the pixels; smoother, more readable images.
        decay_power: the spectrum's decay (Fourier parametrisation only).
        mean, std: the model's input normalisation (default: the model takes pixels in ``[0, 1]``).
        seed: seed of the private generator of the start image (mid-grey plus 1 % noise) and the jitter.
        layer_layout: ``"nchw"``, ``"nhwc"`` or ``"tokens"`` to force how ``layer``'s output is read.
        output_transform: a function from the model's output to ``[B, C]`` logits (class targets).

    Returns:
        :class:`ActivationMaxResult`.
    """
    if (classes is None) == (layer is None):
        raise ValueError("pass layer= and channels= (channel targets) or classes= (class targets), not both.")
    if layer is not None and not channels:
        raise ValueError(f"channels must list channel indices of layer {layer!r}, e.g. channels=[0, 1, 2].")
    if not is_int(steps) or not is_int(jitter, minimum=0):
        raise ValueError(f"steps must be an int >= 1 and jitter an int >= 0; got {steps!r}, {jitter!r}.")
    if lr <= 0 or tv_weight < 0 or l2_weight < 0:
        raise ValueError(f"lr must be > 0 and tv_weight, l2_weight >= 0; got {lr}, {tv_weight}, {l2_weight}.")
    n_ch = int(input_shape[0]) if len(input_shape) == 3 else 0
    m = torch.as_tensor(mean if mean is not None else [0.0] * n_ch, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std if std is not None else [1.0] * n_ch, dtype=torch.float32).view(1, -1, 1, 1)
    x0 = _start_input(model, input_shape, m, s)
    device, dtype = x0.device, x0.dtype
    m, s = m.to(device), s.to(device)
    g = torch.Generator().manual_seed(seed)
    with preserve_model_state(model), grad_context(device), ExitStack() as stack:
        m, s = m.clone(), s.clone()  # made under trainer.validate()'s inference mode: copies can enter a graph
        chosen = channels if classes is None else classes
        assert chosen is not None
        rows = torch.arange(len(chosen), device=device)
        if classes is None:
            assert layer is not None and channels is not None
            read = _read_layer(model, layer, x0, layer_layout)
            units = torch.tensor(_check_units(channels, read.channels, f"layer {read.name!r}"), device=device)
            rec = stack.enter_context(record_layer(read.module, read.name, protect_from_inplace=False))
            stack.enter_context(stop_after(read.module))

            def target(x: Tensor) -> Tensor:
                rec.outputs.clear()
                with suppress(StopForward):
                    model(x)
                fmap = read.layout.to_nchw(rec.feature_map(tokens=True)).float()
                return fmap[rows, units].flatten(1).mean(1)

        else:
            units = torch.tensor(_check_units(classes, _num_classes(model, x0, output_transform), "the model"))
            units = units.to(device)

            def target(x: Tensor) -> Tensor:
                return read_output(model(x), output_transform).logits.float()[rows, units]

        image = _Image((len(rows), *(int(d) for d in input_shape)), fourier, decay_power, g).to(device)  # type: ignore[arg-type]
        objective = _Objective(target, m, s, dtype)
        with torch.no_grad():
            initial = objective.value(image.pixels())
        optimizer = torch.optim.Adam([image.var], lr=lr)
        history: list[float] = []
        with task("activation maximisation", total=steps) as bar:
            for _ in range(steps):
                pixels = image.pixels()
                shift = [int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=g)] if jitter else [0, 0]
                value = objective.value(torch.roll(pixels, shifts=shift, dims=(2, 3)))
                penalty = tv_weight * total_variation(pixels) + l2_weight * (pixels - 0.5).pow(2).flatten(1).mean(1)
                (grad,) = torch.autograd.grad((penalty - value).sum(), [image.var])
                image.var.grad = grad
                optimizer.step()
                image.var.grad = None
                history.append(float(value.detach().mean()))
                bar.update()
        with torch.no_grad():
            pixels = image.pixels()
            final = objective.value(pixels)
            images = objective.model_input(pixels)
        if not bool(torch.isfinite(final).all()):
            raise FloatingPointError(f"the target became {final.tolist()} (not finite); lower lr or raise tv_weight.")
    return ActivationMaxResult(images.detach(), pixels.detach(), initial.detach(), final.detach(), history)


class _Objective:
    """The targets of pixels in ``[0, 1]``: normalise with ``mean``/``std``, cast, run the target function."""

    def __init__(self, target: Callable[[Tensor], Tensor], mean: Tensor, std: Tensor, dtype: torch.dtype) -> None:
        self.target, self.mean, self.std, self.dtype = target, mean, std, dtype

    def model_input(self, pixels: Tensor) -> Tensor:
        return ((pixels - self.mean) / self.std).to(self.dtype)

    def value(self, pixels: Tensor) -> Tensor:
        return self.target(self.model_input(pixels))
