"""ExplainCallback: Grad-CAM, saliency and channel activations of a fixed probe batch, every validation epoch.

The callback is thin: it decides *when* (validation epoch end, not the sanity check, every n epochs, global
rank zero only), keeps the probe, and hands off to :mod:`lightning_explain.functional` (maps),
:mod:`lightning_explain.render` (pictures) and :mod:`lightning_explain.sinks` (loggers / PNG files).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn

from lightning_explain.capture import default_conv_layer, preserve_model_state, resolve_layer
from lightning_explain.functional._common import OutputTransform, check_inputs
from lightning_explain.functional.gradients import METHODS, explain
from lightning_explain.probe import BatchUnpacker, Probe, probe_from_dataloader, probe_from_dataset
from lightning_explain.render import explanation_grid, nonfinite_rows, to_display, valid_colormap
from lightning_explain.sinks import ImageSink

__all__ = ["ExplainCallback"]

_TARGET_MODES = ("predicted", "label")


class ExplainCallback(Callback):
    """Log where the model looks on a fixed probe batch at the end of every validation epoch.

    One hooked forward pass and one ``torch.autograd.grad`` call per epoch give every map. The pass never
    changes training: ``param.grad``, BatchNorm statistics, train/eval and ``requires_grad`` flags, the RNG
    states and the model's hooks are as before (also when the pass raises).

    Args:
        target_layer: dotted module name (or module) for Grad-CAM and activations; None picks the last
            ``Conv2d``. Checked at setup: an unknown name fails with the closest existing names.
        methods: any of ``"gradcam"``, ``"saliency"``, ``"activations"``.
        num_probe: how many validation samples form the probe (the first ones of the first val dataloader).
        probe: an explicit probe tensor ``[N, C, H, W]`` instead (``probe_labels`` ``[N]`` optional).
        probe_labels: class indices for an explicit ``probe``.
        probe_indices: indices into the first validation dataset instead of the first ``num_probe``.
        targets: ``"predicted"`` (explain the predicted class), ``"label"`` (the true class) or a class index.
        every_n_epochs: explain when ``current_epoch % every_n_epochs == 0`` (always under ``validate()``).
        top_k: channels shown per image for ``"activations"``.
        mean: per-channel mean used to normalise the inputs (to undo it for display); with ``std``.
        std: per-channel std used to normalise the inputs; without both, images are min-max scaled.
        colormap: a matplotlib colour map name.
        alpha: heat-map opacity in the overlays, in [0, 1].
        cell_size: long side in pixels of each cell of the grid.
        class_names: names shown instead of class indices in the captions.
        input_key: key of the images in dict batches.
        label_key: key of the labels in dict batches.
        unpack_batch: a function from a batch to ``(images, labels or None)`` for other batch structures.
        output_transform: a function from the model's output to ``[B, C]`` logits.
        tag_prefix: first part of every logged tag.
        strict: re-raise a failure inside an explanation instead of warning once and skipping the view.

    Logged images (one per method, at ``trainer.global_step``; a row per probe image):
        - ``{tag_prefix}/gradcam``: input | Grad-CAM overlay.
        - ``{tag_prefix}/saliency``: input | saliency overlay.
        - ``{tag_prefix}/activations``: input | the ``top_k`` most active channels of ``target_layer``.

    Images go to every TensorBoard logger and every logger with ``log_image``; with none, PNG files go to
    ``<log_dir>/explain_images/<tag>/epoch=EEEE-step=SSSSSSS.png`` (one warning says where).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(callbacks=[ExplainCallback("layer4")], logger=TensorBoardLogger("runs"))
    """

    def __init__(
        self,
        target_layer: str | nn.Module | None = None,
        methods: Sequence[str] = METHODS,
        *,
        num_probe: int = 16,
        probe: Tensor | None = None,
        probe_labels: Tensor | None = None,
        probe_indices: Sequence[int] | None = None,
        targets: str | int = "predicted",
        every_n_epochs: int = 1,
        top_k: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        cell_size: int = 128,
        class_names: Sequence[str] | None = None,
        input_key: str = "image",
        label_key: str = "label",
        unpack_batch: BatchUnpacker | None = None,
        output_transform: OutputTransform = None,
        tag_prefix: str = "explain",
        strict: bool = False,
    ) -> None:
        super().__init__()
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}; got {list(methods)}.")
        for arg, value in (("num_probe", num_probe), ("every_n_epochs", every_n_epochs), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1; got {value!r}.")
        if not (isinstance(targets, int) and not isinstance(targets, bool) and targets >= 0) and (
            targets not in _TARGET_MODES
        ):
            raise ValueError(f"targets must be 'predicted', 'label' or a class index >= 0; got {targets!r}.")
        if (mean is None) != (std is None):
            raise ValueError("mean and std go together: pass both (to undo input normalisation) or neither.")
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise ValueError(f"mean has {len(mean)} values but std has {len(std)}; give one per channel.")
            if any(s <= 0 for s in std):
                raise ValueError(f"std values must be > 0; got {list(std)}.")
        if not valid_colormap(colormap):
            raise ValueError(f"colormap {colormap!r} is not a matplotlib colour map (e.g. 'jet', 'viridis').")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
        if cell_size < 16:
            raise ValueError(f"cell_size must be >= 16 pixels; got {cell_size}.")
        if probe is not None and probe_indices is not None:
            raise ValueError("pass either probe (a tensor) or probe_indices (dataset indices), not both.")
        if probe is not None:
            check_inputs(probe)
            if probe_labels is not None and probe_labels.reshape(-1).shape[0] != probe.shape[0]:
                raise ValueError(f"probe_labels has {probe_labels.numel()} entries for {probe.shape[0]} images.")
        if targets == "label" and probe is not None and probe_labels is None:
            raise ValueError("targets='label' needs labels: pass probe_labels with the probe.")

        self.target_layer = target_layer
        self.methods = methods
        self.num_probe = num_probe
        self.probe_indices = list(probe_indices) if probe_indices is not None else None
        self.targets = targets
        self.every_n_epochs = every_n_epochs
        self.top_k = top_k
        self.mean, self.std = mean, std
        self.colormap, self.alpha, self.cell_size = colormap, alpha, cell_size
        self.class_names = list(class_names) if class_names is not None else None
        self.input_key, self.label_key, self.unpack_batch = input_key, label_key, unpack_batch
        self.output_transform = output_transform
        self.tag_prefix = tag_prefix
        self.strict = strict

        self._probe: Probe | None = None
        if probe is not None:
            labels = probe_labels.reshape(-1).long().cpu() if probe_labels is not None else None
            self._probe = Probe(probe.detach().cpu().clone(), labels)
        self._layer_name: str | None = None
        self._checked = False
        self._warned: set[str] = set()
        self._sink = ImageSink()

    @property
    def state_key(self) -> str:
        layer = self.target_layer if isinstance(self.target_layer, str) or self.target_layer is None else "module"
        return self._generate_state_key(target_layer=layer, methods=self.methods, tag_prefix=self.tag_prefix)

    @property
    def _needs_layer(self) -> bool:
        return any(m in ("gradcam", "activations") for m in self.methods)

    # ----------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._needs_layer:
            name, _ = (
                default_conv_layer(pl_module)
                if self.target_layer is None
                else resolve_layer(pl_module, self.target_layer)
            )
            self._layer_name = name

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not trainer.enable_validation:
            if self._probe is None:
                raise ValueError(
                    "ExplainCallback found no validation data and no probe: it explains a probe batch at the end "
                    "of each validation epoch. Give the Trainer validation data (a validation_step and "
                    "val_dataloaders=... or a val_dataloader() hook, limit_val_batches > 0)."
                )
            warnings.warn(
                "ExplainCallback runs at the end of validation epochs, but this fit has no validation loop "
                "(no validation_step, no val data, or limit_val_batches=0): it will log nothing.",
                UserWarning,
                stacklevel=2,
            )
            return
        self._prepare(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and trainer.current_epoch % self.every_n_epochs != 0:
            return
        self._prepare(trainer, pl_module)
        self._explain_and_log(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        if self._probe is None:
            return {}
        return {"probe_images": self._probe.images, "probe_labels": self._probe.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        images = state_dict.get("probe_images")
        if isinstance(images, Tensor):
            self._probe = Probe(images.cpu(), state_dict.get("probe_labels"))
            self._checked = False

    # ----------------------------------------------------------------------------------------- work

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the probe once and check, with a two-image pass, that the model can be explained."""
        if self._probe is None:
            self._probe = self._read_probe(trainer)
        if self._checked:
            return
        check_inputs(self._probe.images)
        if self.targets == "label" and self._probe.labels is None:
            raise ValueError(
                "targets='label' but the validation batches carry no class labels ([B] integers). Use "
                "targets='predicted', label_key=... for dict batches, or unpack_batch=<callable>."
            )
        self._compute(pl_module, limit=2)
        self._checked = True

    def _read_probe(self, trainer: pl.Trainer) -> Probe:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        if loaders is None:
            raise ValueError(
                "ExplainCallback found no validation data and no probe. Give the Trainer validation data, or "
                "pass probe=<[N, C, H, W] tensor>."
            )
        keys, unpacker = (self.input_key, self.label_key), self.unpack_batch
        if self.probe_indices is not None:
            return probe_from_dataset(
                loaders.dataset,
                self.probe_indices,
                collate_fn=getattr(loaders, "collate_fn", None),
                input_key=keys[0],
                label_key=keys[1],
                unpacker=unpacker,
            )
        return probe_from_dataloader(loaders, self.num_probe, input_key=keys[0], label_key=keys[1], unpacker=unpacker)

    def _compute(self, pl_module: pl.LightningModule, limit: int | None = None) -> dict[str, Tensor]:
        assert self._probe is not None
        images = self._probe.images[:limit].to(pl_module.device)
        targets: Any = None if self.targets == "predicted" else self.targets
        if self.targets == "label":
            assert self._probe.labels is not None
            targets = self._probe.labels[:limit].to(pl_module.device)
        with preserve_model_state(pl_module):
            return explain(
                pl_module,
                images,
                self._layer_name,
                self.methods,
                targets,
                top_k=self.top_k,
                output_transform=self.output_transform,
            )

    def _explain_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        epoch, step = trainer.current_epoch, trainer.global_step
        try:
            out = self._compute(pl_module)
        except Exception as err:
            self._fail("the probe pass", err, epoch)
            return
        display = to_display(self._probe.images.to(out["logits"].device), self.mean, self.std)
        rows = self._row_captions(out)
        grids: dict[str, Tensor] = {}
        for method in self.methods:
            try:
                grids[f"{self.tag_prefix}/{method}"] = self._grid(method, display, rows, out, epoch)
            except Exception as err:
                self._fail(f"the {method} view", err, epoch)
        if not grids:
            return
        try:
            self._sink.write(trainer.loggers, grids, step=step, epoch=epoch, default_root_dir=trainer.default_root_dir)
        except Exception as err:
            self._fail("logging the images", err, epoch)

    def _grid(self, method: str, display: Tensor, rows: list[str], out: dict[str, Tensor], epoch: int) -> Tensor:
        maps = out[method]
        bad = nonfinite_rows(maps)
        if bad and f"nonfinite/{method}" not in self._warned:
            self._warned.add(f"nonfinite/{method}")
            warnings.warn(
                f"ExplainCallback: the {method} map of probe images {bad} holds NaN or inf at epoch {epoch} "
                "(diverging weights or an overflow); those cells are shown blank and training continues.",
                UserWarning,
                stacklevel=2,
            )
        columns = None
        if method == "activations":
            columns = [[f"ch {c}" for c in row] for row in out["activation_channels"].tolist()]
        return explanation_grid(
            display,
            maps,
            rows,
            column_captions=columns,
            alpha=self.alpha,
            colormap=self.colormap,
            cell_size=self.cell_size,
        )

    def _row_captions(self, out: dict[str, Tensor]) -> list[str]:
        assert self._probe is not None
        preds = out["logits"].argmax(dim=1).tolist()
        labels = self._probe.labels.tolist() if self._probe.labels is not None else [None] * len(preds)

        def name(index: int) -> str:
            names = self.class_names
            return names[index] if names is not None and 0 <= index < len(names) else str(index)

        return [
            f"#{i} " + (f"y={name(y)} " if y is not None else "") + f"p={name(p)}"
            for i, (y, p) in enumerate(zip(labels, preds, strict=True))
        ]

    def _fail(self, view: str, err: Exception, epoch: int) -> None:
        if self.strict:
            raise err
        if view in self._warned:
            return
        self._warned.add(view)
        warnings.warn(
            f"ExplainCallback: {view} failed at epoch {epoch} ({type(err).__name__}: {err}). It is skipped and "
            "training continues; this warning is shown once. Pass strict=True to raise instead.",
            UserWarning,
            stacklevel=2,
        )
