"""FeatureInversion: what a layer keeps of a probe image, by reconstructing the image from the layer's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._view import ViewCallback
from lightning_explain.capture import resolve_layer
from lightning_explain.epoch.checks import check_positive_int, is_int
from lightning_explain.epoch.probe import BatchUnpacker
from lightning_explain.functional.inversion import invert_features
from lightning_explain.output.render import compose_grid, to_display

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["FeatureInversion"]


class FeatureInversion(ViewCallback):
    """Reconstruct probe images from ``layer``'s features every ``every_n_epochs`` epochs and log them.

    Runs :func:`lightning_explain.functional.invert_features` (Adam on the input only, total-variation prior,
    ``param.grad`` and every model flag untouched, the forward stopped at ``layer``) from the same seeded start
    every time, so the reconstructions of different epochs are comparable: as training goes on, a layer keeps more
    of what matters for the task and less of the rest. Cost: ``steps`` forwards up to ``layer`` and backwards, per
    run (see the README's cost table); keep ``every_n_epochs`` large.

    Args:
        layer: dotted name of the layer to invert.
        image_indices: which probe images to reconstruct (rows of the grid).
        every_n_epochs: run when ``current_epoch % every_n_epochs == 0``.
        steps, lr, tv_weight, l2_weight, bounds, seed: see :func:`~lightning_explain.functional.invert_features`.
        progress: show a tqdm bar; None = when the Trainer shows its progress bar.
        num_probe, probe, mean, std, cell_size, input_key, label_key, unpack_batch, tag_prefix, strict: as in
            :class:`~lightning_explain.ExplainCallback`.

    Logged images:
        - ``{tag_prefix}/inversion/{layer}``: a row per image: input | reconstruction (both shown with ``mean`` /
          ``std`` undone, or min-max scaled each).

    Logged metrics:
        - ``{tag_prefix}/inversion/{layer}/feature_distance``: ``||phi(x) - phi(x0)|| / ||phi(x0)||`` of the
          reconstruction, mean over the images.

    Example:
        >>> cb = FeatureInversion("layer2", every_n_epochs=5, steps=200, tv_weight=1.0)
    """

    def __init__(
        self,
        layer: str,
        *,
        image_indices: Sequence[int] = (0,),
        every_n_epochs: int = 5,
        steps: int = 200,
        lr: float = 0.05,
        tv_weight: float = 1.0,
        l2_weight: float = 0.0,
        bounds: tuple[float, float] | None = None,
        seed: int = 0,
        progress: bool | None = None,
        num_probe: int = D.NUM_PROBE,
        probe: Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cell_size: int = D.CELL_SIZE,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=max(num_probe, max(image_indices, default=0) + 1),  # the probe holds every chosen image
            probe=probe,
            mean=mean,
            std=std,
            cell_size=cell_size,
            input_key=input_key,
            label_key=label_key,
            unpack_batch=unpack_batch,
            tag_prefix=tag_prefix,
            strict=strict,
        )
        check_positive_int(steps=steps)
        if not image_indices or not all(is_int(i, minimum=0) for i in image_indices):
            raise ValueError(f"image_indices must be probe indices >= 0; got {image_indices!r}.")
        if lr <= 0 or tv_weight < 0 or l2_weight < 0:
            raise ValueError(f"lr must be > 0 and tv_weight, l2_weight >= 0; got {lr}, {tv_weight}, {l2_weight}.")
        self.layer, self.image_indices = layer, list(image_indices)
        self.steps, self.lr, self.tv_weight, self.l2_weight = steps, lr, tv_weight, l2_weight
        self.bounds = tuple(bounds) if bounds is not None else None
        self.seed, self.progress = seed, progress
        #: Losses per step of the last run.
        self.latest_losses: list[float] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, tag_prefix=self.tag_prefix)

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resolve_layer(pl_module, self.layer)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        bad = [i for i in self.image_indices if i >= len(self._probe)]
        if bad:
            raise ValueError(f"image_indices {bad} are beyond the probe's {len(self._probe)} images.")
        images = self._probe.images[self.image_indices].to(pl_module.device)
        out = invert_features(
            pl_module,
            self.layer,
            images,
            steps=self.steps,
            lr=self.lr,
            tv_weight=self.tv_weight,
            l2_weight=self.l2_weight,
            bounds=self.bounds,  # type: ignore[arg-type]
            seed=self.seed,
            progress=self.progress,  # None: the Trainer's bar decides (the reporter ViewCallback installs)
        )
        self.latest_losses = out.losses
        columns = [to_display(images, self.mean, self.std), to_display(out.image, self.mean, self.std)]
        captions = [[f"#{i}", "reconstruction"] for i in self.image_indices]
        tag = f"{self.tag_prefix}/inversion/{self.layer}"
        self._log(pl_module, {f"{tag}/feature_distance": float(out.final_distance.mean())})
        self._write(trainer, {tag: compose_grid(columns, captions, cell_size=self.cell_size)})
