"""The shared skeleton of the extra views (errors, filters, feature maps, TCAV, inversion).

Each view is a thin callback: this base decides *when* (validation epoch end, not the sanity check, every n epochs,
global rank zero only), reads and keeps the probe, sends images to the sinks and scalars to ``pl_module.log``, and
turns a failure in a later epoch into one warning (``strict=True`` re-raises). Subclasses implement ``_run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from lightning_explain.callbacks._checks import check_display, check_positive_int, check_probe_args, fail_softly
from lightning_explain.distributed import check_sharded, start_together
from lightning_explain.functional.context import check_inputs
from lightning_explain.probe import BatchUnpacker, Probe, first_val_loader, probe_from_dataloader
from lightning_explain.sinks import ImageSink

__all__ = ["ViewCallback"]


class ViewCallback(Callback):
    """Base of the extra views. Not used directly.

    Args:
        every_n_epochs: run when ``current_epoch % every_n_epochs == 0`` (always under ``validate()``).
        num_probe: how many validation samples form the probe (the first ones of the first val dataloader).
        probe: an explicit probe ``[N, C, H, W]`` instead; ``probe_labels`` ``[N]`` optional.
        probe_labels: class indices for an explicit ``probe``.
        mean, std: the input normalisation, undone for display (without them images are min-max scaled).
        colormap: matplotlib colour map of the maps.
        cell_size: long side in pixels of each grid cell.
        class_names: names shown instead of class indices.
        input_key, label_key: keys of images and labels in dict batches.
        unpack_batch: a function from a batch to ``(images, labels or None)``.
        output_transform: a function from the model's output to ``[B, C]`` logits.
        tag_prefix: first part of every tag.
        strict: re-raise a failure instead of warning once and skipping the view.
    """

    #: Whether the view needs the probe batch.
    uses_probe = True

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        num_probe: int = 16,
        probe: Tensor | None = None,
        probe_labels: Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "jet",
        cell_size: int = 128,
        class_names: Sequence[str] | None = None,
        input_key: str = "image",
        label_key: str = "label",
        unpack_batch: BatchUnpacker | None = None,
        output_transform: Any = None,
        tag_prefix: str = "explain",
        strict: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int(every_n_epochs=every_n_epochs, num_probe=num_probe)
        check_display(mean, std, colormap, cell_size, min_cell_size=8)
        check_probe_args(probe, probe_labels)
        self._probe: Probe | None = None
        if probe is not None:
            labels = probe_labels.reshape(-1).long().cpu() if probe_labels is not None else None
            self._probe = Probe(probe.detach().cpu().clone(), labels)
        self.every_n_epochs = every_n_epochs
        self.num_probe = num_probe
        self.mean, self.std = mean, std
        self.colormap, self.cell_size = colormap, cell_size
        self.class_names = list(class_names) if class_names is not None else None
        self.input_key, self.label_key, self.unpack_batch = input_key, label_key, unpack_batch
        self.output_transform = output_transform
        self.tag_prefix = tag_prefix
        self.strict = strict
        self._warned: set[str] = set()
        self._sink = ImageSink()
        #: Set in ``setup`` under a sharded strategy (FSDP, DeepSpeed-3): the view then does nothing.
        self._sharded: str | None = None

    # ----------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._sharded = check_sharded(trainer, type(self).__name__)
        if self._sharded is None:
            self._setup(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sharded is None:
            start_together(trainer, lambda: self._start(trainer, pl_module), type(self).__name__)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._sharded is not None:
            return
        if not self._is_due(trainer):
            return
        try:
            if self.uses_probe:
                self._ensure_probe(trainer)
            self._run(trainer, pl_module)
        except Exception as err:
            self._fail("the view", err, trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        if self._probe is None:
            return {}
        return {"probe_images": self._probe.images, "probe_labels": self._probe.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        images = state_dict.get("probe_images")
        if isinstance(images, Tensor):
            self._probe = Probe(images.cpu(), state_dict.get("probe_labels"))

    # ----------------------------------------------------------------------------------------- helpers

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Checks that need the model (layer names, arguments): raise with the fix. Runs on every rank."""

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At train start, on global rank zero: read the probe, so that bad data fails before the first step."""
        if self.uses_probe and trainer.enable_validation:
            self._ensure_probe(trainer)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def _is_due(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or trainer.current_epoch % self.every_n_epochs == 0

    def _ensure_probe(self, trainer: pl.Trainer) -> Probe:
        if self._probe is None:
            loader = first_val_loader(trainer)
            if loader is None:
                raise ValueError(
                    f"{type(self).__name__} found no validation data and no probe. Give the Trainer validation "
                    "data, or pass probe=<[N, C, H, W] tensor>."
                )
            probe = probe_from_dataloader(
                loader, self.num_probe, input_key=self.input_key, label_key=self.label_key, unpacker=self.unpack_batch
            )
            check_inputs(probe.images)
            self._probe = probe
        return self._probe

    def _class_name(self, index: int) -> str:
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    def _write(self, trainer: pl.Trainer, grids: dict[str, Tensor]) -> None:
        self._sink.write(
            trainer.loggers,
            grids,
            step=trainer.global_step,
            epoch=trainer.current_epoch,
            default_root_dir=trainer.default_root_dir,
        )

    @staticmethod
    def _log(pl_module: pl.LightningModule, values: dict[str, float]) -> None:
        for key, value in values.items():
            pl_module.log(key, value, rank_zero_only=True)

    def _fail(self, view: str, err: Exception, epoch: int) -> None:
        fail_softly(type(self).__name__, view, err, epoch, strict=self.strict, warned=self._warned)
