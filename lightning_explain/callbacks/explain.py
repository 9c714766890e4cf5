"""ExplainCallback: Grad-CAM, saliency and channel activations of a fixed probe batch, every validation epoch.

The callback is thin: it decides *when* (validation epoch end, not the sanity check, every n epochs, global
rank zero only), keeps the probe, and hands off to :mod:`lightning_explain.functional` (maps),
:mod:`lightning_explain.render` (pictures) and :mod:`lightning_explain.sinks` (loggers / PNG files).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn

from lightning_explain.callbacks._checks import check_display, check_positive_int, check_probe_args, fail_softly
from lightning_explain.capture import preserve_model_state, resolve_layer
from lightning_explain.distributed import check_sharded, start_together
from lightning_explain.functional import (
    DEFAULT_METHODS,
    EXPENSIVE_METHODS,
    LAYER_METHODS,
    METHOD_OPTIONS,
    canonical_methods,
    check_options,
    default_layer,
    explain,
)
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.monitor import MapMetrics, summarize
from lightning_explain.probe import (
    BatchUnpacker,
    Probe,
    check_probe,
    first_val_loader,
    probe_from_dataloader,
    probe_from_dataset,
)
from lightning_explain.render import explanation_grid, grid_layout, nonfinite_rows, to_display
from lightning_explain.sinks import ImageSink, scalar_layout

__all__ = ["ExplainCallback"]

_TARGET_MODES = ("predicted", "label")
#: Per-method schedule options, besides each method's own (``METHOD_OPTIONS``).
SCHEDULE_OPTIONS = frozenset({"every_n_epochs", "max_images"})
#: Probe images an expensive method explains unless ``method_options`` says otherwise.
EXPENSIVE_MAX_IMAGES = 4
#: Extra views of the ``attention`` method (one column per head / per layer) and their column captions.
STRIP_VIEWS = {"attention_heads": "head", "attention_layers": "layer"}
#: Probe images shown in those views.
STRIP_IMAGES = 4


class ExplainCallback(Callback):
    """Log where the model looks on a fixed probe batch at the end of every validation epoch.

    One hooked forward pass and one ``torch.autograd.grad`` call per epoch give every map. The pass never
    changes training: ``param.grad``, BatchNorm statistics, train/eval and ``requires_grad`` flags, the RNG
    states and the model's hooks are as before (also when the pass raises). Under DDP only global rank zero
    computes; under strategies that shard the parameters (FSDP, DeepSpeed stage 3) the callback is disabled with
    one warning, since a forward on rank zero alone would hang.

    Args:
        target_layer: dotted module name (or module) for Grad-CAM and activations; None picks the last
            ``Conv2d``. Checked at setup: an unknown name fails with the closest existing names.
        methods: names from :data:`lightning_explain.functional.METHODS` (default: ``"gradcam"``,
            ``"saliency"``, ``"activations"``, which share one pass).
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
        metrics: log focus and drift numbers per epoch for ``gradcam`` and ``saliency``.
        object_mask_key: where each validation batch holds the object masks ``[B, H, W]``: a tuple position
            (e.g. 2 for ``(x, y, object_mask, cue_mask)``) or a dict key. Enables the object focus metrics.
        cue_mask_key: the same for masks of a known spurious cue; enables ``energy_in_cue``.
        probe_object_masks: object masks ``[N, H, W]`` for an explicit ``probe``.
        probe_cue_masks: cue masks ``[N, H, W]`` for an explicit ``probe``.
        border_fraction: width of the border band for the no-mask heuristic, as a fraction of the side.
        method_options: per method, ``every_n_epochs`` and ``max_images`` (its own schedule and probe subset;
            expensive methods default to the first 4 images) and the method's own options, e.g.
            ``{"smoothgrad": {"samples": 8, "every_n_epochs": 5}, "occlusion": {"window": 8, "stride": 4}}``.

    Logged images (one per method, at ``trainer.global_step``; a row per probe image):
        - ``{tag_prefix}/gradcam``: input | Grad-CAM overlay.
        - ``{tag_prefix}/saliency``: input | saliency overlay.
        - ``{tag_prefix}/activations``: input | the ``top_k`` most active channels of ``target_layer``.
        - ``{tag_prefix}/{method}``: input | overlay, for every other method in ``methods``.
        - ``{tag_prefix}/attention_heads`` and ``{tag_prefix}/attention_layers`` (with ``"attention"``): for the
          first 4 probe images, the class-token attention of each head of the chosen layer, and of every
          layer from 0 to L-1 (how attention forms through depth).

    Images go to every TensorBoard logger, every logger with ``log_image`` (W&B) and MLflow; with none,
    PNG files go to ``<log_dir>/explain_images/<tag>/epoch=EEEE-step=SSSSSSS.png`` (one warning says where).

    Logged text (TensorBoard only, at the grids' step): ``{tag_prefix}/layout``, one JSON line per explained
    epoch, ``{"epoch", "step", "grids": {tag: {"rows", "columns", "cell_height", "cell_width", "band",
    "pad"}}}``: where each probe image's row lies in each grid (``lightning-explain report`` cuts rows with it).

    Logged metrics (through ``pl_module.log``, so ``EarlyStopping`` and ``FocusAlert`` can monitor them; the
    median over probe images; ``{m}`` is each single-map method, i.e. all but ``activations``):
        - ``{tag_prefix}/{m}/focus/border_energy``, ``border_area``, ``border_lift``: always (no masks needed).
        - ``{tag_prefix}/{m}/focus/energy_in_object``, ``object_area``, ``lift``, ``mask_auc``,
          ``pointing_game``: with object masks.
        - ``{tag_prefix}/{m}/focus/energy_in_cue``, ``cue_area``, ``cue_lift``: with cue masks.
        - ``{tag_prefix}/{m}/drift/{metric}_prev``, ``{metric}_first``, ``{metric}_chance`` for ``emd``,
          ``com_shift``, ``topk_iou``, ``spearman``: against the previous and the first explained epoch, and
          between different probe images (the chance level).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(callbacks=[ExplainCallback("layer4")], logger=TensorBoardLogger("runs"))
    """

    def __init__(
        self,
        target_layer: str | nn.Module | None = None,
        methods: Sequence[str] = DEFAULT_METHODS,
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
        metrics: bool = True,
        object_mask_key: int | str | None = None,
        cue_mask_key: int | str | None = None,
        probe_object_masks: Tensor | None = None,
        probe_cue_masks: Tensor | None = None,
        border_fraction: float = 0.1,
        method_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        methods = canonical_methods(methods)
        check_positive_int(num_probe=num_probe, every_n_epochs=every_n_epochs, top_k=top_k)
        schedule, fn_options = _split_method_options(methods, method_options, every_n_epochs)
        if not (isinstance(targets, int) and not isinstance(targets, bool) and targets >= 0) and (
            targets not in _TARGET_MODES
        ):
            raise ValueError(f"targets must be 'predicted', 'label' or a class index >= 0; got {targets!r}.")
        check_display(mean, std, colormap, cell_size, min_cell_size=16, alpha=alpha)
        if probe is not None and probe_indices is not None:
            raise ValueError("pass either probe (a tensor) or probe_indices (dataset indices), not both.")
        check_probe_args(probe, probe_labels)
        if targets == "label" and probe is not None and probe_labels is None:
            raise ValueError("targets='label' needs labels: pass probe_labels with the probe.")
        if not 0.0 < border_fraction < 0.5:
            raise ValueError(f"border_fraction must lie in (0, 0.5); got {border_fraction}.")
        explicit_masks = {"object": probe_object_masks, "cue": probe_cue_masks}
        if probe is None and any(m is not None for m in explicit_masks.values()):
            raise ValueError(
                "probe_object_masks / probe_cue_masks go with an explicit probe=...; for validation data use "
                "object_mask_key / cue_mask_key."
            )

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
        self.metrics = metrics
        self.method_options = method_options
        self._schedule, self._fn_options = schedule, fn_options
        self.mask_keys = {
            name: key for name, key in (("object", object_mask_key), ("cue", cue_mask_key)) if key is not None
        }
        self.border_fraction = border_fraction
        #: Per-image values of the last explained epoch, by logged key (for FocusAlert and users).
        self.latest_per_image: dict[str, Tensor] = {}
        #: The epoch ``latest_per_image`` belongs to.
        self.latest_epoch: int | None = None
        #: The methods scored at ``latest_epoch`` (each method runs on its own schedule).
        self.latest_methods: tuple[str, ...] = ()
        self._map_metrics = MapMetrics(border_fraction)
        self._layout_written = False

        self._probe: Probe | None = None
        if probe is not None:
            labels = probe_labels.reshape(-1).long().cpu() if probe_labels is not None else None
            masks = {k: m.detach().cpu().bool() for k, m in explicit_masks.items() if m is not None}
            self._probe = Probe(probe.detach().cpu().clone(), labels, masks)
        self._layer_name: str | None = None
        self._checked = False
        self._warned: set[str] = set()
        self._sink = ImageSink()
        #: Set in ``setup`` under a sharded strategy (FSDP, DeepSpeed-3): the callback then does nothing.
        self._sharded: str | None = None

    @property
    def state_key(self) -> str:
        layer = self.target_layer if isinstance(self.target_layer, str) or self.target_layer is None else "module"
        return self._generate_state_key(target_layer=layer, methods=self.methods, tag_prefix=self.tag_prefix)

    @property
    def _needs_layer(self) -> bool:
        return any(m in LAYER_METHODS for m in self.methods)

    # ----------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._sharded = check_sharded(trainer, "ExplainCallback")
        if self._sharded is not None:
            return
        if self._needs_layer:
            target = default_layer(pl_module) if self.target_layer is None else self.target_layer
            name, _ = resolve_layer(pl_module, target)
            self._layer_name = name

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sharded is None:
            start_together(trainer, lambda: self._start(trainer, pl_module), "ExplainCallback")

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
        if trainer.sanity_checking or not trainer.is_global_zero or self._sharded is not None:
            return
        if not self._due(trainer):
            return
        self._prepare(trainer, pl_module)
        self._explain_and_log(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        if self._probe is None:
            return {}
        return {
            "probe_images": self._probe.images,
            "probe_labels": self._probe.labels,
            "probe_masks": dict(self._probe.masks),
            "map_history": self._map_metrics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        images = state_dict.get("probe_images")
        if isinstance(images, Tensor):
            masks = {k: v.cpu() for k, v in dict(state_dict.get("probe_masks") or {}).items()}
            self._probe = Probe(images.cpu(), state_dict.get("probe_labels"), masks)
            self._checked = False
        self._map_metrics.load_state_dict(state_dict.get("map_history") or {})

    # ----------------------------------------------------------------------------------------- work

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the probe once and check, with a two-image pass, that the model can be explained."""
        if self._probe is None:
            self._probe = self._read_probe(trainer)
        if self._checked:
            return
        check_inputs(self._probe.images)
        check_probe(self._probe.images, self.mean, self.std)
        size = tuple(self._probe.images.shape[-2:])
        for name, mask in self._probe.masks.items():
            if tuple(mask.shape) != (len(self._probe), *size):
                raise ValueError(
                    f"the probe's {name} masks have shape {list(mask.shape)}; they must be [N, H, W] = "
                    f"{[len(self._probe), *size]}, the size of the probe images."
                )
        if self.targets == "label" and self._probe.labels is None:
            raise ValueError(
                "targets='label' but the validation batches carry no class labels ([B] integers). Use "
                "targets='predicted', label_key=... for dict batches, or unpack_batch=<callable>."
            )
        cheap = [m for m in self.methods if m not in EXPENSIVE_METHODS] or ["saliency"]
        self._compute(pl_module, cheap, limit=2)
        self._checked = True

    def _read_probe(self, trainer: pl.Trainer) -> Probe:
        loaders = first_val_loader(trainer)
        if loaders is None:
            raise ValueError(
                "ExplainCallback found no validation data and no probe. Give the Trainer validation data, or "
                "pass probe=<[N, C, H, W] tensor>."
            )
        if self.probe_indices is not None:
            return probe_from_dataset(
                loaders.dataset,
                self.probe_indices,
                collate_fn=getattr(loaders, "collate_fn", None),
                input_key=self.input_key,
                label_key=self.label_key,
                unpacker=self.unpack_batch,
                mask_keys=self.mask_keys,
            )
        return probe_from_dataloader(
            loaders,
            self.num_probe,
            input_key=self.input_key,
            label_key=self.label_key,
            unpacker=self.unpack_batch,
            mask_keys=self.mask_keys,
        )

    def _compute(
        self, pl_module: pl.LightningModule, methods: Sequence[str], limit: int | None = None
    ) -> dict[str, Tensor]:
        assert self._probe is not None
        images = self._probe.images[:limit].to(pl_module.device)
        targets: Any = None if self.targets == "predicted" else self.targets
        if self.targets == "label":
            assert self._probe.labels is not None
            targets = self._probe.labels[:limit].to(pl_module.device)
        with preserve_model_state(pl_module):
            result = explain(
                pl_module,
                images,
                self._layer_name,
                methods,
                targets,
                top_k=self.top_k,
                output_transform=self.output_transform,
                options={m: o for m, o in self._fn_options.items() if m in methods},
            )
        extra = {
            "logits": result.logits,
            "targets": result.targets,
            "activation_channels": result.activation_channels,
            "attention_heads": result.attention_heads,
            "attention_layers": result.attention_layers,
        }
        return {**result.maps, **{k: v for k, v in extra.items() if v is not None}}

    def _due(self, trainer: pl.Trainer) -> dict[int | None, list[str]]:
        """Methods due this epoch, grouped by how many probe images they explain (one ``explain`` call each)."""
        fitting = trainer.state.fn == TrainerFn.FITTING
        groups: dict[int | None, list[str]] = {}
        for method in self.methods:
            every, limit = self._schedule[method]
            if not fitting or trainer.current_epoch % every == 0:
                groups.setdefault(limit, []).append(method)
        return groups

    def _explain_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        epoch, step = trainer.current_epoch, trainer.global_step
        out: dict[str, Tensor] = {}
        for limit, methods in sorted(self._due(trainer).items(), key=lambda kv: -(kv[0] or len(self._probe or []))):
            try:
                result = self._compute(pl_module, methods, limit)
            except Exception as err:
                self._fail("the probe pass" if limit is None else f"the {'/'.join(methods)} pass", err, epoch)
                continue
            for key, value in result.items():
                out.setdefault(key, value)  # logits/targets of the largest group win
        maps = [m for m in self.methods if m in out]
        if not maps:
            return
        if self.metrics:
            try:
                self._log_metrics(trainer, pl_module, out, maps)
            except Exception as err:
                self._fail("the focus and drift metrics", err, epoch)
        try:
            display = to_display(self._probe.images.to(out["logits"].device), self.mean, self.std)
            rows = self._row_captions(out)
        except Exception as err:
            self._fail("rendering the probe images", err, epoch)
            return
        grids: dict[str, Tensor] = {}
        views = maps + [view for view in STRIP_VIEWS if view in out]
        for method in views:
            try:
                grids[f"{self.tag_prefix}/{method}"] = self._grid(method, display, rows, out, epoch)
            except Exception as err:
                self._fail(f"the {method} view", err, epoch)
        if not grids:
            return
        try:
            self._sink.write(trainer.loggers, grids, step=step, epoch=epoch, default_root_dir=trainer.default_root_dir)
            self._sink.write_text(
                trainer.loggers, f"{self.tag_prefix}/layout", self._layout(grids, epoch, step), step=step
            )
        except Exception as err:
            self._fail("logging the images", err, epoch)

    def _layout(self, grids: dict[str, Tensor], epoch: int, step: int) -> str:
        """JSON that says where each probe image's row lies in each grid (the HTML report cuts rows with it)."""
        assert self._probe is not None
        size = tuple(self._probe.images.shape[-2:])
        layouts = {tag: grid_layout(grid.shape[-2:], size, self.cell_size) for tag, grid in grids.items()}
        return json.dumps(
            {
                "epoch": epoch,
                "step": step,
                "grids": {tag: dataclasses.asdict(lay) for tag, lay in layouts.items() if lay is not None},
            }
        )

    def _log_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, out: dict[str, Tensor], methods: list[str]
    ) -> None:
        assert self._probe is not None
        per_image: dict[str, Tensor] = {}
        scored = [m for m in methods if m != "activations"]
        for method in scored:
            n = out[method].shape[0]
            masks = {name: mask[:n] for name, mask in self._probe.masks.items()}
            values = self._map_metrics.update(method, out[method], masks)
            per_image.update({f"{self.tag_prefix}/{method}/{name}": v for name, v in values.items()})
        self.latest_per_image, self.latest_epoch = per_image, trainer.current_epoch
        self.latest_methods = tuple(scored)
        for key, value in summarize(per_image).items():
            pl_module.log(key, value, rank_zero_only=True)
        if scored and not self._layout_written:
            self._layout_written = True
            self._sink.write_layout(trainer.loggers, scalar_layout(self.tag_prefix, scored))

    def _grid(self, method: str, display: Tensor, rows: list[str], out: dict[str, Tensor], epoch: int) -> Tensor:
        maps = out[method][:STRIP_IMAGES] if method in STRIP_VIEWS else out[method]
        bad = nonfinite_rows(maps)
        if bad and f"nonfinite/{method}" not in self._warned:
            self._warned.add(f"nonfinite/{method}")
            warnings.warn(
                f"ExplainCallback: the {method} map of probe images {bad} holds NaN or inf at epoch {epoch} "
                "(diverging weights or an overflow); those cells are shown blank and training continues.",
                UserWarning,
                stacklevel=2,
            )
        n = maps.shape[0]
        display, rows = display[:n], rows[:n]
        columns = None
        if method == "activations":
            columns = [[f"ch {c}" for c in row] for row in out["activation_channels"].tolist()]
        elif method in STRIP_VIEWS:
            columns = [[f"{STRIP_VIEWS[method]} {j}" for j in range(maps.shape[1])]] * n
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
        fail_softly("ExplainCallback", view, err, epoch, strict=self.strict, warned=self._warned)


def _split_method_options(
    methods: tuple[str, ...], options: dict[str, dict[str, Any]] | None, every_n_epochs: int
) -> tuple[dict[str, tuple[int, int | None]], dict[str, dict[str, Any]]]:
    """``method_options`` -> (schedule per method: (every_n_epochs, max_images or None), functional options)."""
    options = {canonical_methods(m)[0]: dict(o) for m, o in (options or {}).items()}
    stray = sorted(set(options) - set(methods))
    if stray:
        raise ValueError(f"method_options names {stray}, which are not in methods={list(methods)}.")
    schedule: dict[str, tuple[int, int | None]] = {}
    functional: dict[str, dict[str, Any]] = {}
    for method in methods:
        opts = options.get(method, {})
        unknown = set(opts) - SCHEDULE_OPTIONS - METHOD_OPTIONS.get(method, frozenset())
        if unknown:
            allowed = sorted(SCHEDULE_OPTIONS | METHOD_OPTIONS.get(method, frozenset()))
            raise ValueError(f"method_options[{method!r}] has unknown keys {sorted(unknown)}; allowed: {allowed}.")
        every = opts.pop("every_n_epochs", every_n_epochs)
        limit = opts.pop("max_images", EXPENSIVE_MAX_IMAGES if method in EXPENSIVE_METHODS else None)
        for name, value, low in (("every_n_epochs", every, 1), ("max_images", limit, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"method_options[{method!r}][{name!r}] must be an integer >= {low}; got {value!r}.")
        schedule[method] = (every, limit)
        if opts:
            functional[method] = check_options({method: opts})[method]
    return schedule, functional
