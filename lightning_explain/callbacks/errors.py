"""ErrorAttribution: for the images the model gets wrong, the map of the predicted class next to the true class's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._renamed import renamed
from lightning_explain.callbacks._view import ViewCallback, layer_name
from lightning_explain.capture import preserve_model_state
from lightning_explain.epoch.checks import check_int, check_positive_int
from lightning_explain.epoch.distributed import all_gather_objects, world_size
from lightning_explain.epoch.history import ConfusedExamples
from lightning_explain.epoch.maps import find_layer
from lightning_explain.epoch.probe import BatchUnpacker, first_val_loader, sampled_indices, unpack_batch
from lightning_explain.functional import ATTENTION_METHODS, LAYER_METHODS, METHODS, canonical_methods
from lightning_explain.functional.predictions import first_logits, no_grad_logits, pair_maps, predicted_classes
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.output.render import explanation_grid, to_display

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ErrorAttribution"]


class ErrorAttribution(ViewCallback):
    """Explain the model's mistakes: the map of the predicted class next to the map of the true class.

    Two views, every ``every_n_epochs`` validation epochs on global rank zero:

    1. The probe images the model gets wrong (at most ``max_rows``): input | map for the predicted class | map for
       the true class. Both maps come from one pass over the wrong images stacked twice.
    2. The ``num_confused`` most confidently wrong validation examples of the epoch, explained the same way. They are
       collected while validation runs, from the logits validation already computes: ``validation_step``'s return
       value when it is ``[B, C]`` logits (or a dict with ``"logits"``), else the output of the LightningModule's
       own ``forward`` during the step (a forward hook, registered for the validation epoch only). Where neither
       is available (e.g. ``validation_step`` calls ``self.model(x)``), one extra no-grad forward per batch on the
       first ``max_batches`` batches. Only the ``num_confused`` candidates are kept, on the CPU. With several processes
       (DDP, FSDP2) every rank searches its shard of the validation data and the ranks' ``num_confused`` candidates (not
       the data) are gathered, so the view shows the most confident mistakes over all ranks, captioned with their
       indices in the validation dataset.

    Cost per explained epoch: one no-grad forward of the probe, and one forward + ``autograd.grad`` over twice the
    wrong images of each view (resnet18, 8 wrong images at 224 px: about one plain forward of 16 images); the
    most-confused bookkeeping adds under 1 % of each validation batch's own forward (see the README's cost table).

    Args:
        layer: layer for the CAM methods, a dotted name (or module); None = ExplainCallback's default, found on the
            probe.
        method: a single-map method of :data:`lightning_explain.functional.METHODS` (default ``"gradcam"``).
        max_rows: wrong probe images shown at most.
        num_confused: most confident wrong validation examples to explain; 0 switches the view off.
        max_batches: validation batches given an extra forward when the logits cannot be read (None = all).
        num_probe, probe, probe_labels, every_n_epochs, mean, std, colormap, cell_size, class_names: as in
            :class:`~lightning_explain.ExplainCallback`.
        input_key, label_key, unpack_batch, output_transform, tag_prefix, strict: as in
            :class:`~lightning_explain.ExplainCallback`.
        target_layer: deprecated name of ``layer`` (a deprecation warning; removed in the next release).
        top_k: deprecated name of ``num_confused`` (a deprecation warning; removed in the next release).

    Logged images:
        - ``{tag_prefix}/errors/probe``: wrong probe images: input | predicted-class map | true-class map.
        - ``{tag_prefix}/errors/most_confused``: the ``num_confused`` most confident wrong validation examples,
          the same.

    Logged metrics:
        - ``{tag_prefix}/errors/probe_error_rate``: share of probe images predicted wrong.
        - ``{tag_prefix}/errors/max_wrong_confidence``: the highest confidence of a wrong validation prediction.

    Example:
        >>> cb = ErrorAttribution("layer4", num_confused=8, class_names=["cat", "dog"])
    """

    def __init__(
        self,
        layer: str | nn.Module | None = None,
        method: str = "gradcam",
        *,
        max_rows: int = 8,
        num_confused: int = 8,
        max_batches: int | None = 8,
        num_probe: int = D.NUM_PROBE,
        probe: Tensor | None = None,
        probe_labels: Tensor | None = None,
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = D.COLORMAP,
        alpha: float = D.ALPHA,
        cell_size: int = D.CELL_SIZE,
        class_names: Sequence[str] | None = None,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        output_transform: OutputTransform = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
        target_layer: str | nn.Module | None = None,
        top_k: int | None = None,
    ) -> None:
        layer = renamed("ErrorAttribution", "target_layer", target_layer, "layer", layer, None)
        num_confused = renamed("ErrorAttribution", "top_k", top_k, "num_confused", num_confused, 8)
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=num_probe,
            probe=probe,
            probe_labels=probe_labels,
            mean=mean,
            std=std,
            colormap=colormap,
            alpha=alpha,
            cell_size=cell_size,
            class_names=class_names,
            input_key=input_key,
            label_key=label_key,
            unpack_batch=unpack_batch,
            output_transform=output_transform,
            tag_prefix=tag_prefix,
            strict=strict,
        )
        (method,) = canonical_methods(method)
        if method not in METHODS or method == "activations" or method in ATTENTION_METHODS:
            raise ValueError(
                f"method must be a single-map method such as 'gradcam' or 'saliency' (not 'activations' or an "
                f"attention view); got {method!r}."
            )
        check_positive_int(max_rows=max_rows)
        check_int("num_confused" if top_k is None else "top_k", num_confused, minimum=0)  # the name given
        if max_batches is not None:
            check_positive_int(max_batches=max_batches)
        if probe is not None and probe_labels is None:
            raise ValueError("ErrorAttribution needs the true classes: pass probe_labels with the probe.")
        self.layer, self.method = layer, method
        self.max_rows, self.num_confused, self.max_batches = max_rows, num_confused, max_batches
        #: The most confident wrong validation predictions of the last collected epoch.
        self.most_confused = ConfusedExamples.empty()
        self._candidates = ConfusedExamples.empty()
        self._layer_name: str | None = None
        self._collecting = False
        self._hook: Any = None
        self._captured: Any = None
        self._seen = 0
        self._extra_forwards = 0

    @property
    def state_key(self) -> str:
        layer = self.layer if isinstance(self.layer, str) or self.layer is None else "module"
        # ``target_layer=`` (the argument's old name) keeps the keys of existing checkpoints
        return self._generate_state_key(target_layer=layer, method=self.method, tag_prefix=self.tag_prefix)

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.method in LAYER_METHODS and self.layer is not None:
            self._layer_name = layer_name(pl_module, self.layer)  # None: found on the probe by _run

    # ----------------------------------------------------------------------------------------- collection

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_collecting()
        if self.num_confused == 0 or trainer.sanity_checking or self._sharded is not None:
            return  # every rank collects its shard's candidates: rank zero gathers them at the epoch end
        if not self._is_due(trainer):
            return
        self._collecting, self._seen, self._extra_forwards = True, 0, 0
        self._candidates = ConfusedExamples.empty()

        def hook(_module: Any, _args: Any, output: Any) -> None:
            self._captured = output

        self._hook = pl_module.register_forward_hook(hook)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._collecting or dataloader_idx != 0:
            return
        captured, self._captured = self._captured, None
        try:
            self._collect(pl_module, outputs, captured, batch)
        except Exception as err:
            self._fail("collecting the most confused examples", err, trainer.current_epoch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._collecting:
            self.most_confused = self._gather(trainer, self._candidates)
        self._stop_collecting()
        super().on_validation_epoch_end(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_collecting()
        super().teardown(trainer, pl_module, stage)  # every image written before the loggers close

    def _stop_collecting(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._hook, self._captured, self._collecting = None, None, False

    def _collect(self, pl_module: pl.LightningModule, outputs: Any, captured: Any, batch: Any) -> None:
        images, labels = unpack_batch(
            batch, input_key=self.input_key, label_key=self.label_key, unpacker=self.unpack_batch
        )
        start, self._seen = self._seen, self._seen + int(images.shape[0])
        if labels is None:
            return
        logits = first_logits(
            (outputs.get("logits") if isinstance(outputs, dict) else outputs, captured),
            int(images.shape[0]),
            self.output_transform,
        )
        if logits is None:
            if self.max_batches is not None and self._extra_forwards >= self.max_batches:
                return
            self._extra_forwards += 1
            logits = no_grad_logits(pl_module, images, self.output_transform)
            self._captured = None
        new = ConfusedExamples.from_batch(logits, labels, images, start, self.num_confused)
        self._candidates = self._candidates.merge(new, self.num_confused)

    def _gather(self, trainer: pl.Trainer, local: ConfusedExamples) -> ConfusedExamples:
        """The ``num_confused`` best of every rank's candidates (each rank sends its own best only), on every rank.

        Positions in a rank's shard become dataset indices through the rank's sampler (Lightning's
        ``DistributedSampler``); a copy of a sample that the sampler repeats to even out the shards counts once.
        """
        if world_size(trainer.strategy) == 1:
            return local
        order = sampled_indices(first_val_loader(trainer))
        if order is not None:
            inside = local.indices < len(order)
            local = ConfusedExamples(*(t[inside] for t in local.as_tuple()))
            local.indices = torch.tensor([order[i] for i in local.indices.tolist()], dtype=torch.long)
        merged = ConfusedExamples.empty()
        for candidates in all_gather_objects(trainer.strategy, local):
            merged = merged.merge(candidates, len(merged) + len(candidates))
        first: dict[int, int] = {}  # dataset index -> its first (most confident) row
        for row, index in enumerate(merged.indices.tolist()):
            first.setdefault(index, row)
        keep = torch.tensor(list(first.values())[: self.num_confused], dtype=torch.long)
        return ConfusedExamples(*(t[keep] for t in merged.as_tuple()))

    # ----------------------------------------------------------------------------------------- explanation

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        if self.method in LAYER_METHODS and self._layer_name is None:  # ExplainCallback's default layer
            self._layer_name = find_layer(
                pl_module, self._probe, "predicted", pl_module.device, self.output_transform
            ).name
        if self._probe.labels is None:
            raise ValueError(
                "the probe has no class labels, so mistakes cannot be found. Give labelled validation batches "
                "(label_key=... for dicts, unpack_batch=...) or probe_labels."
            )
        grids: dict[str, Tensor] = {}
        images = self._probe.images.to(pl_module.device)
        with preserve_model_state(pl_module):
            predictions = predicted_classes(pl_module, images, self.output_transform)
        wrong = (predictions != self._probe.labels).nonzero().flatten()
        self._log(pl_module, {f"{self.tag_prefix}/errors/probe_error_rate": wrong.numel() / len(self._probe)})
        wrong = wrong[: self.max_rows]
        if wrong.numel():
            grids[f"{self.tag_prefix}/errors/probe"] = self._grid(
                pl_module,
                images[wrong],
                predictions[wrong],
                self._probe.labels[wrong],
                [f"#{i}" for i in wrong.tolist()],
            )
        confused = self.most_confused
        if self.num_confused and confused.indices.numel() and trainer.state.fn in ("fit", "validate"):
            self._log(pl_module, {f"{self.tag_prefix}/errors/max_wrong_confidence": float(confused.confidence[0])})
            rows = [
                f"val #{i} {c:.2f}"
                for i, c in zip(confused.indices.tolist(), confused.confidence.tolist(), strict=True)
            ]
            grids[f"{self.tag_prefix}/errors/most_confused"] = self._grid(
                pl_module, confused.images.to(pl_module.device), confused.predictions, confused.labels, rows
            )
        if grids:
            self._write(trainer, grids)

    def pair_maps(self, pl_module: pl.LightningModule, images: Tensor, predicted: Tensor, true: Tensor) -> Tensor:
        """Maps ``[n, 2, H, W]``: for the predicted class, then the true class, from one pass over ``[x; x]``."""
        with preserve_model_state(pl_module):
            return pair_maps(pl_module, images, self._layer_name, self.method, predicted, true, self.output_transform)

    def _grid(
        self, pl_module: pl.LightningModule, images: Tensor, predicted: Tensor, true: Tensor, rows: list[str]
    ) -> Tensor:
        maps = self.pair_maps(pl_module, images, predicted, true)
        display = to_display(images, self.mean, self.std)
        columns = [
            [f"pred {self._class_name(p)}", f"true {self._class_name(t)}"]
            for p, t in zip(predicted.tolist(), true.tolist(), strict=True)
        ]
        return explanation_grid(
            display,
            maps,
            rows,
            column_captions=columns,
            alpha=self.alpha,
            colormap=self.colormap,
            cell_size=self.cell_size,
        )
