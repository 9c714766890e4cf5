"""ActivationMaximization: the input each chosen channel or class responds to most, synthesised as training goes on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._view import ViewCallback
from lightning_explain.capture import resolve_layer
from lightning_explain.epoch.checks import check_positive_int, is_int
from lightning_explain.epoch.probe import BatchUnpacker
from lightning_explain.functional.activation_max import ActivationMaxResult, count_units, maximize_activation
from lightning_explain.functional.layouts import LAYOUTS
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.output.render import compose_grid, to_display

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ActivationMaximization"]


def _check_indices(what: str, values: Sequence[int]) -> list[int]:
    if isinstance(values, (str, bytes)) or not values or not all(is_int(v, minimum=0) for v in values):
        raise ValueError(f"{what} must be a non-empty list of indices >= 0; got {values!r}.")
    return list(values)


class ActivationMaximization(ViewCallback):
    """Every ``every_n_epochs`` epochs, synthesise and log the input that maximises each chosen channel or class.

    Runs :func:`lightning_explain.functional.maximize_activation` (gradient ascent on the image only, with jitter,
    total variation and an optional Fourier parametrisation; ``param.grad``, BN statistics, every flag and the
    global RNG untouched) from the same seeded start every time, so the images of different epochs are comparable:
    a reader sees what a unit has learned to respond to, and how that changes with training. Cost: ``steps``
    forwards (up to the layer) and backwards of one image per unit, per layer, per run (see the README's cost
    table); keep ``every_n_epochs`` large.

    The synthesised inputs have ``input_shape`` (default: the shape of the first validation sample), their pixels
    lie in ``[0, 1]`` and the model sees them normalised with ``mean`` / ``std`` (without them: the model is taken
    to read pixels in ``[0, 1]``).

    Args:
        channels: channel indices to maximise, by layer name: ``{"layer3": [0, 1, 2], "layer4": [7]}``.
        classes: class indices whose logits to maximise (the model must return ``[B, C]`` class scores).
        every_n_epochs: run when ``current_epoch % every_n_epochs == 0``.
        input_shape: ``[C, H, W]`` of the synthesised inputs; None = the first validation sample's.
        steps, lr, jitter, tv_weight, l2_weight, fourier, decay_power, seed, layer_layout: see
            :func:`~lightning_explain.functional.maximize_activation`.
        columns: cells per grid row.
        mean, std, cell_size, class_names, input_key, label_key, unpack_batch, output_transform, tag_prefix, strict: as
            in :class:`~lightning_explain.ExplainCallback` (``mean``/``std`` also normalise the input).

    Logged images:
        - ``{tag_prefix}/activation_max/{layer}``: one cell per channel, captioned ``ch <index>: <activation>``
          (the channel's mean activation reached).
        - ``{tag_prefix}/activation_max/classes``: one cell per class, captioned ``<class>: <logit>``.

    Logged metrics:
        - ``{tag_prefix}/activation_max/{layer}/activation`` and ``.../classes/logit``: the value reached, mean over
          the units.

    Example:
        >>> cb = ActivationMaximization({"layer3": [0, 1, 2, 3]}, classes=[0, 1], every_n_epochs=5, steps=128)
    """

    uses_probe = False

    def __init__(
        self,
        channels: Mapping[str, Sequence[int]] | None = None,
        *,
        classes: Sequence[int] | None = None,
        every_n_epochs: int = 5,
        input_shape: Sequence[int] | None = None,
        steps: int = 128,
        lr: float = 0.05,
        jitter: int = 4,
        tv_weight: float = 0.5,
        l2_weight: float = 0.0,
        fourier: bool = True,
        decay_power: float = 1.0,
        seed: int = 0,
        layer_layout: str | None = None,
        columns: int = 8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cell_size: int = 64,
        class_names: Sequence[str] | None = None,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        output_transform: OutputTransform = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=1,  # the first validation sample gives the input shape
            mean=mean,
            std=std,
            cell_size=cell_size,
            class_names=class_names,
            input_key=input_key,
            label_key=label_key,
            unpack_batch=unpack_batch,
            output_transform=output_transform,
            tag_prefix=tag_prefix,
            strict=strict,
        )
        if not channels and not classes:
            raise ValueError(
                "ActivationMaximization needs channels={'<layer>': [indices]} and/or classes=[indices]; got neither."
            )
        self.channels = {str(k): _check_indices(f"channels[{k!r}]", v) for k, v in (channels or {}).items()}
        self.classes = _check_indices("classes", classes) if classes is not None else None
        check_positive_int(steps=steps, columns=columns)
        if not is_int(jitter, minimum=0) or lr <= 0 or tv_weight < 0 or l2_weight < 0:
            raise ValueError(
                f"jitter must be an int >= 0, lr > 0 and tv_weight, l2_weight >= 0; got {jitter!r}, {lr}, "
                f"{tv_weight}, {l2_weight}."
            )
        if input_shape is not None and (len(input_shape) != 3 or not all(is_int(d) for d in input_shape)):
            raise ValueError(f"input_shape must be [C, H, W] (positive ints) or None; got {input_shape!r}.")
        if layer_layout is not None and layer_layout not in LAYOUTS:
            raise ValueError(f"layer_layout must be one of {list(LAYOUTS)} or None; got {layer_layout!r}.")
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.steps, self.lr, self.jitter, self.tv_weight, self.l2_weight = steps, lr, jitter, tv_weight, l2_weight
        self.fourier, self.decay_power, self.seed, self.layer_layout = fourier, decay_power, seed, layer_layout
        self.columns = columns
        #: The results of the last run, by tag.
        self.latest: dict[str, ActivationMaxResult] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(channels=self.channels, classes=self.classes, tag_prefix=self.tag_prefix)

    # ---------------------------------------------------------------------------------------------- hooks

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for layer in self.channels:
            resolve_layer(pl_module, layer)  # an unknown name raises with the closest names

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At train start, on global rank zero: check the channel and class indices with one pass per layer."""
        if self.input_shape is not None or trainer.enable_validation:
            self._check_units(pl_module, self._shape(trainer))

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        shape = self._shape(trainer)
        grids: dict[str, Tensor] = {}
        scalars: dict[str, float] = {}
        base = f"{self.tag_prefix}/activation_max"
        for layer, units in self.channels.items():
            out = self._maximize(pl_module, shape, layer=layer, channels=units)
            captions = [f"ch {u}: {v:.3g}" for u, v in zip(units, out.final.tolist(), strict=True)]
            grids[f"{base}/{layer}"] = self._grid(out.pixels, captions)
            scalars[f"{base}/{layer}/activation"] = float(out.final.mean())
            self.latest[f"{base}/{layer}"] = out
        if self.classes is not None:
            out = self._maximize(pl_module, shape, classes=self.classes)
            names = [self._class_name(c) for c in self.classes]
            captions = [f"{n}: {v:.3g}" for n, v in zip(names, out.final.tolist(), strict=True)]
            grids[f"{base}/classes"] = self._grid(out.pixels, captions)
            scalars[f"{base}/classes/logit"] = float(out.final.mean())
            self.latest[f"{base}/classes"] = out
        self._log(pl_module, scalars)
        self._write(trainer, grids)

    # ---------------------------------------------------------------------------------------------- helpers

    def _shape(self, trainer: pl.Trainer) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        if self._probe is None and not trainer.enable_validation:
            raise ValueError(
                "ActivationMaximization takes the input shape from the first validation sample, but there is no "
                "validation data. Pass input_shape=[C, H, W]."
            )
        return tuple(int(d) for d in self._ensure_probe(trainer).images.shape[1:])

    def _check_units(self, pl_module: pl.LightningModule, shape: Sequence[int]) -> None:
        wanted: list[tuple[str | None, list[int]]] = list(self.channels.items())
        if self.classes is not None:
            wanted.append((None, self.classes))
        for layer, units in wanted:
            kwargs = {"layer_layout": self.layer_layout, "output_transform": self.output_transform}
            available = count_units(pl_module, layer, input_shape=shape, **kwargs)  # type: ignore[arg-type]
            bad = [u for u in units if u >= available]
            if bad:
                where, what = (
                    (f"channels[{layer!r}]", f"layer {layer!r} outputs {available} channels")
                    if layer is not None
                    else ("classes", f"the model scores {available} classes")
                )
                raise ValueError(
                    f"ActivationMaximization {where} has indices {bad}, but {what}. Choose indices in "
                    f"0..{available - 1}."
                )

    def _maximize(self, pl_module: pl.LightningModule, shape: Sequence[int], **target: object) -> ActivationMaxResult:
        return maximize_activation(
            pl_module,
            input_shape=shape,
            steps=self.steps,
            lr=self.lr,
            jitter=self.jitter,
            tv_weight=self.tv_weight,
            l2_weight=self.l2_weight,
            fourier=self.fourier,
            decay_power=self.decay_power,
            mean=self.mean,
            std=self.std,
            seed=self.seed,
            layer_layout=self.layer_layout,
            output_transform=self.output_transform,
            **target,  # type: ignore[arg-type]
        )

    def _grid(self, pixels: Tensor, captions: list[str]) -> Tensor:
        """Cells in rows of ``columns``, row-major; missing cells of the last row are blank."""
        channels = pixels.shape[1]
        cells = to_display(pixels, mean=[0.0] * channels, std=[1.0] * channels)  # pixels are in [0, 1]: as they are
        k = len(cells)
        ncols = min(self.columns, k)
        nrows = -(-k // ncols)
        blank = torch.ones_like(cells[:1])
        padded = torch.cat([cells, blank.expand(nrows * ncols - k, -1, -1, -1)]) if nrows * ncols > k else cells
        texts = [*captions, *[""] * (nrows * ncols - k)]
        columns = [padded[c::ncols] for c in range(ncols)]
        rows = [texts[r * ncols : (r + 1) * ncols] for r in range(nrows)]
        return compose_grid(columns, rows, cell_size=self.cell_size)
