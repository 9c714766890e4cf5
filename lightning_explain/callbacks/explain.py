"""ExplainCallback: Grad-CAM, saliency and channel activations of a fixed probe batch, every validation epoch.

The callback is thin: :class:`~lightning_explain.callbacks._view.ViewCallback` decides *when* (validation epoch end,
not the sanity check, every n epochs, global rank zero only) and keeps the probe; this class decides which methods
are due and where their results go, and hands off to :mod:`lightning_explain.functional` (maps),
:mod:`lightning_explain.epoch` (groups, metrics, captions, grids, layout) and :mod:`lightning_explain.output.sinks`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from lightning_explain._lightning import is_fitting, logged_step
from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._renamed import renamed
from lightning_explain.callbacks._view import ViewCallback, layer_name
from lightning_explain.capture import preserve_model_state
from lightning_explain.dashboard.summary import layout_extras
from lightning_explain.epoch.checks import check_explain_arguments, check_int, check_positive_int, check_probe_masks
from lightning_explain.epoch.distributed import all_gather_objects
from lightning_explain.epoch.faithfulness_schedule import Faithfulness
from lightning_explain.epoch.grids import layout_json, render_probe, row_captions, view_grid, view_maps, views
from lightning_explain.epoch.history import MapMetrics, summarize
from lightning_explain.epoch.maps import (
    find_layer,
    flat_layer_maps,
    integer_skips,
    merge_results,
    predictions_of,
    probe_targets,
    score_maps,
)
from lightning_explain.epoch.memory import MemoryGuard, explain_in_chunks, record_activation_bytes
from lightning_explain.epoch.messages import (
    NO_LABELS_ERROR,
    NO_VALIDATION_ERROR,
    NO_VALIDATION_WARNING,
    coarse_warning,
    flat_warning,
    nonfinite_warning,
)
from lightning_explain.epoch.probe import BatchUnpacker, check_probe, probe_mask
from lightning_explain.epoch.restore import StateProblem, map_history_state
from lightning_explain.epoch.schedule import StageClock, due_groups, split_method_options
from lightning_explain.epoch.trust_schedule import Trust, method_explainer, sanity_warning
from lightning_explain.functional import DEFAULT_METHODS, EXPENSIVE_METHODS, LAYER_METHODS, canonical_methods, explain
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.engine import ExplainResult
from lightning_explain.functional.target_layer import LayerChoice
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.output.render import nonfinite_rows
from lightning_explain.output.sinks import scalar_layout

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ExplainCallback"]


class ExplainCallback(ViewCallback):
    """Log where the model looks on a fixed probe batch at the end of every validation epoch.

    One hooked forward pass and one ``torch.autograd.grad`` call per epoch give every map. The pass never
    changes training: ``param.grad``, BatchNorm statistics, train/eval and ``requires_grad`` flags, the RNG
    states and the model's hooks are as before (also when the pass raises). Under DDP only global rank zero
    computes; under FSDP2 every rank joins the pass and rank zero logs; under FSDP v1 and DeepSpeed stage 3 the
    callback is disabled with one warning. :attr:`stage_seconds` says where the last explained epoch's time went.

    Args:
        layer: dotted module name (or module) for Grad-CAM and activations; None finds it on two probe
            images (:func:`~lightning_explain.functional.locate_layer`: the last block output with a spatial grid
            that the score depends on), says it once and keeps it in :attr:`layer_choice`. An unknown name fails
            at setup with the closest existing names.
        layer_layout: ``"nchw"``, ``"nhwc"`` or ``"tokens"`` when the layer's output layout cannot be told from
            its shape (the error says so); None decides it.
        methods: names from :data:`lightning_explain.functional.METHODS` (default: ``"gradcam"``,
            ``"saliency"``, ``"activations"``, which share one pass).
        num_probe: how many validation samples form the probe (the first ones of the first val dataloader).
        probe: an explicit probe tensor ``[N, C, H, W]`` instead (``probe_labels`` ``[N]`` optional).
        probe_labels: class indices for an explicit ``probe``.
        probe_indices: indices into the first validation dataset instead of the first ``num_probe``.
        targets: ``"predicted"`` (explain the predicted class), ``"label"`` (the true class) or a class index.
        every_n_epochs: explain when ``current_epoch % every_n_epochs == 0`` (always under ``validate()``).
        top_k_channels: the most active channels of ``layer`` shown per image for ``"activations"``.
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
        object_mask_key: where each validation batch holds the object masks ``[B, H, W]`` or boxes (``[B, 4]``
            as (x0, y0, x1, y1) in pixels, or a list of each image's boxes ``[K, 4]``): a tuple position (e.g. 2 for
            ``(x, y, object_mask, cue_mask)``) or a dict key. Enables the object focus metrics. A box counts as
            the filled rectangle, the pixels whose centres lie in ``[x0, x1) x [y0, y1)``; a box outside the image
            or of another shape is an error when the probe is read.
        cue_mask_key: the same for masks or boxes of a known spurious cue; enables ``energy_in_cue``.
        probe_object_masks: object masks ``[N, H, W]`` or boxes (as above) for an explicit ``probe``.
        probe_cue_masks: cue masks ``[N, H, W]`` or boxes for an explicit ``probe``.
        border_fraction: width of the border band for the no-mask heuristic, as a fraction of the side.
        method_options: per method, ``every_n_epochs`` and ``max_images`` (its own schedule and probe subset;
            expensive methods default to the first 4 images) and the method's own options, e.g.
            ``{"smoothgrad": {"samples": 8, "every_n_epochs": 5}, "occlusion": {"window": 8, "stride": 4}}``.
        faithfulness: with ``metrics``, deletion/insertion AUC and ROAD (see
            :class:`~lightning_explain.epoch.faithfulness_schedule.Faithfulness`): True (every 5 epochs, first 4 probe
            images) or a dict of its fields, e.g. ``{"steps": 8}``.
        trust: with ``metrics``, can the maps be trusted (see :class:`~lightning_explain.epoch.trust_schedule.Trust`
            and docs/guides/trust.md): model-parameter randomisation and random-logit similarity, max/avg
            sensitivity, sparseness, complexity and faithfulness correlation. True (every 5 epochs, first 4 probe
            images) or a dict of its fields, e.g. ``{"tests": ["randomisation"], "every_n_epochs": 10}``. A method
            whose map survives randomising every layer (median Spearman above ``sanity_threshold``) is named in one
            warning. Off by default.
        target_layer: deprecated name of ``layer`` (a deprecation warning; removed in the next release).
        top_k: deprecated name of ``top_k_channels`` (a deprecation warning; removed in the next release).
        memory_guard: True (default) estimates the probe pass's memory in the first dry run and, when it exceeds
            half the free accelerator memory, explains the probe in chunks (said once); an out-of-memory error in a
            view is retried once in halves, then the view is skipped with the cause. A
            :class:`~lightning_explain.epoch.memory.MemoryGuard` sets the fraction (or a simulated budget); False
            turns both off.

    Logged images (one per method, at the step of the epoch's validation metrics, ``global_step - 1`` during ``fit``;
    a row per probe image):
        - ``{tag_prefix}/gradcam``: input | Grad-CAM overlay.
        - ``{tag_prefix}/saliency``: input | saliency overlay.
        - ``{tag_prefix}/activations``: input | the ``top_k_channels`` most active channels of ``layer``.
        - ``{tag_prefix}/{method}``: input | overlay, for every other method in ``methods``.
        - ``{tag_prefix}/attention_heads`` and ``{tag_prefix}/attention_layers`` (with ``"attention"``): for the
          first 4 probe images, the class-token attention of each head of the chosen layer, and of every
          layer from 0 to L-1 (how attention forms through depth).

    Images go to every TensorBoard logger, every logger with ``log_image`` (W&B) and MLflow; with none, to PNG
    files (:mod:`lightning_explain.output.sinks`), encoded and written in the background.

    Logged text (TensorBoard only): ``{tag_prefix}/layer`` once (the layer, its layout, why it was chosen);
    ``{tag_prefix}/layout``, a JSON line per explained epoch saying where each probe row lies in each grid.

    Logged metrics (through ``pl_module.log``, so ``EarlyStopping`` and ``FocusAlert`` can monitor them; the
    median over probe images; ``{m}`` is each single-map method, i.e. all but ``activations``):
        - ``{tag_prefix}/{m}/focus/spread``, ``border_energy``, ``border_area``, ``border_lift``: always (no masks
          needed; ``spread`` is the share of the image the map covers, see ``FocusAlert.without_masks``).
        - ``{tag_prefix}/{m}/focus/energy_in_object``, ``object_area``, ``lift``, ``mask_auc``,
          ``pointing_game``: with object masks.
        - ``{tag_prefix}/{m}/focus/energy_in_cue``, ``cue_area``, ``cue_lift``: with cue masks.
        - ``{tag_prefix}/{m}/drift/{metric}_prev``, ``{metric}_first``, ``{metric}_chance`` for ``emd``,
          ``com_shift``, ``topk_iou``, ``spearman``: against the previous and the first explained epoch, and
          between different probe images (the chance level).
        - ``{tag_prefix}/{m}/faithfulness/{deletion_auc,insertion_auc,road_morf,road_lerf,road_gap}``: see above.
        - ``{tag_prefix}/{m}/trust/{mprt_spearman_top,mprt_spearman,mprt_ssim,random_logit_spearman,
          random_logit_ssim,max_sensitivity,avg_sensitivity,sparseness,complexity,faithfulness_correlation}``: with
          ``trust``.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(callbacks=[ExplainCallback("layer4")], logger=TensorBoardLogger("runs"))
    """

    #: Grad-CAM grids carry captions: their cells need room.
    min_cell_size = 16
    integer_images = True

    def __init__(
        self,
        layer: str | nn.Module | None = None,
        methods: Sequence[str] = DEFAULT_METHODS,
        *,
        num_probe: int = D.NUM_PROBE,
        probe: Tensor | None = None,
        probe_labels: Tensor | None = None,
        probe_indices: Sequence[int] | None = None,
        targets: str | int = "predicted",
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        top_k_channels: int = 3,
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
        metrics: bool = True,
        object_mask_key: int | str | None = None,
        cue_mask_key: int | str | None = None,
        probe_object_masks: Tensor | Sequence[Any] | None = None,
        probe_cue_masks: Tensor | Sequence[Any] | None = None,
        border_fraction: float = 0.1,
        method_options: dict[str, dict[str, Any]] | None = None,
        layer_layout: str | None = None,
        faithfulness: bool | dict[str, Any] = False,
        trust: bool | dict[str, Any] = False,
        target_layer: str | nn.Module | None = None,
        top_k: int | None = None,
        memory_guard: MemoryGuard | bool = True,
    ) -> None:
        layer = renamed("ExplainCallback", "target_layer", target_layer, "layer", layer, None)
        top_k_channels = renamed("ExplainCallback", "top_k", top_k, "top_k_channels", top_k_channels, 3)
        methods = canonical_methods(methods)
        check_positive_int(num_probe=num_probe, every_n_epochs=every_n_epochs)
        check_int("top_k_channels" if top_k is None else "top_k", top_k_channels)  # the name given
        schedule, fn_options = split_method_options(methods, method_options, every_n_epochs)
        explicit_masks = {"object": probe_object_masks, "cue": probe_cue_masks}
        check_explain_arguments(layer_layout, targets, border_fraction, probe, probe_labels, explicit_masks)
        probe_masks = {k: probe_mask(probe, m, f"probe_{k}_masks") for k, m in explicit_masks.items() if m is not None}
        mask_keys = {k: v for k, v in (("object", object_mask_key), ("cue", cue_mask_key)) if v is not None}
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=num_probe,
            probe=probe,
            probe_labels=probe_labels,
            probe_indices=probe_indices,
            probe_masks=probe_masks,
            mask_keys=mask_keys,
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
        self.layer = layer
        self.methods = methods
        self.targets = targets
        self.top_k_channels = top_k_channels
        self.metrics = metrics
        self.method_options = method_options
        self._schedule, self._fn_options = schedule, fn_options
        self.faithfulness, self._faithfulness = faithfulness, Faithfulness.from_option(faithfulness)
        self.trust, self._trust = trust, Trust.from_option(trust)
        self.border_fraction = border_fraction
        #: Per-image values of the last explained epoch, by logged key (for FocusAlert and users).
        self.latest_per_image: dict[str, Tensor] = {}
        #: The epoch ``latest_per_image`` belongs to.
        self.latest_epoch: int | None = None
        #: The methods scored at ``latest_epoch`` (each method runs on its own schedule).
        self.latest_methods: tuple[str, ...] = ()
        #: Seconds the last explained epoch spent per stage on the training thread (maps, numbers, rendering, ...).
        self.stage_seconds: dict[str, float] = {}
        self._map_metrics = MapMetrics(border_fraction)
        self._layout_written = False
        self.layer_layout = layer_layout
        #: The layer the layer methods explain, its layout and why (set by the first dry run on the probe).
        self.layer_choice: LayerChoice | None = None
        self._layer_name: str | None = None
        #: The methods that run: ``methods`` less those an integer probe cannot take.
        self._active = methods
        self._checked = False
        self.memory_guard = memory_guard
        self._memory = (
            memory_guard if isinstance(memory_guard, MemoryGuard) else MemoryGuard() if memory_guard else None
        )

    @property
    def state_key(self) -> str:
        layer = self.layer if isinstance(self.layer, str) or self.layer is None else "module"
        # ``target_layer=`` (the argument's old name) keeps the keys of existing checkpoints
        return self._generate_state_key(target_layer=layer, methods=self.methods, tag_prefix=self.tag_prefix)

    # ----------------------------------------------------------------------------------------- lifecycle

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if state:
            state["map_history"] = self._map_metrics.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._unrestored_probe is False:  # no probe restored (none kept, or a malformed one): no history either
            return
        self._checked = False
        assert self._probe is not None
        try:
            history = map_history_state(state_dict.get("map_history"), len(self._probe))
        except StateProblem as err:
            self._bad_state(err, "a new map history (drift is measured from the next explained epoch)")
            history = {}
        self._map_metrics.load_state_dict(history)

    def _forget_restored(self) -> None:
        super()._forget_restored()
        self._map_metrics.load_state_dict({})
        self._checked = False
        if self.layer is None:  # found on the restored probe, if at all: found again on the fresh one
            self._layer_name, self.layer_choice = None, None

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layer is not None and any(m in LAYER_METHODS for m in self.methods):
            self._layer_name = layer_name(pl_module, self.layer)  # None: found on the probe by _prepare

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.enable_validation:
            self._prepare(trainer, pl_module)
        elif self._probe is None:
            raise ValueError(NO_VALIDATION_ERROR)
        else:
            warnings.warn(NO_VALIDATION_WARNING, UserWarning, stacklevel=2)

    def _is_due(self, trainer: pl.Trainer) -> bool:
        return bool(self._due(trainer))

    def _due(self, trainer: pl.Trainer) -> list[tuple[int | None, list[str]]]:
        """Methods due this epoch, grouped by how many probe images they explain (one ``explain`` call each)."""
        epoch = trainer.current_epoch if is_fitting(trainer) else None
        return due_groups(self._active, self._schedule, epoch, len(self._probe or []))

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the probe once and check, with a two-image pass, that the model can be explained."""
        if self._probe is None:
            self._probe = self._read_probe(trainer)
        if self._joined and self._memory is not None:  # every rank splits the probe alike (an OOM retry halves one's)
            chunks = [c for c in all_gather_objects(trainer.strategy, self._memory.chunk) if c is not None]
            self._memory.chunk = min(chunks) if chunks else None
        if self._checked:
            return
        images = check_inputs(self._probe.images, integer_ok=True)
        check_probe(images, self.mean, self.std)
        check_probe_masks(self._probe)
        if self.targets == "label" and self._probe.labels is None:
            keys = self._probe.batch_keys
            raise ValueError(NO_LABELS_ERROR + (f" The batches are dicts with keys {list(keys)}." if keys else ""))
        self._active, skipped = integer_skips(self.methods, images)
        if skipped is not None:
            warnings.warn(f"ExplainCallback: {skipped}", UserWarning, stacklevel=2)
        layered = any(m in LAYER_METHODS for m in self._active)
        reason, finer = "given as layer", None
        if layered and self._layer_name is None:
            found = find_layer(pl_module, self._probe, self.targets, pl_module.device, self.output_transform)
            self._layer_name, reason, finer = found.name, found.reason, found.finer
        cheap = [m for m in self._active if m not in EXPENSIVE_METHODS] or ["gradcam"]
        with record_activation_bytes(pl_module) as seen:
            result = self._compute(pl_module, cheap, limit=2)
        self._checked = True
        if self._memory is not None and (message := self._memory.plan(seen.per_image, len(images), pl_module.device)):
            self._warn_once("memory/plan", f"ExplainCallback: {message}")
        if layered and result.layer is not None and result.layout is not None:
            self.layer_choice = LayerChoice(result.layer, result.layout, reason, finer)
            self._report_layer(trainer, self.layer_choice)
            if self.layer_choice.coarse:
                self._warn_once("coarse-grid", coarse_warning(self.layer_choice))

    def _report_layer(self, trainer: pl.Trainer, choice: LayerChoice) -> None:
        """Say once, on the console and in TensorBoard's text, which layer is explained and why."""
        text = f"ExplainCallback explains layer {choice.describe()}."
        namespace = "lightning.pytorch" if type(trainer).__module__.startswith("lightning.") else "pytorch_lightning"
        logging.getLogger(f"{namespace}.lightning_explain").info(text)  # Lightning's own logger prints INFO
        self._sink.write_text(trainer.loggers, f"{self.tag_prefix}/layer", text, step=logged_step(trainer))

    # ----------------------------------------------------------------------------------------- work

    def _compute(
        self, pl_module: pl.LightningModule, methods: Sequence[str], limit: int | None = None
    ) -> ExplainResult:
        """The maps of ``methods`` for the first ``limit`` probe images (all with None), from one ``explain`` call
        (one per chunk of the probe when the memory guard splits it)."""
        assert self._probe is not None
        images = self._probe.images[:limit]
        targets = probe_targets(self.targets, self._probe, limit, pl_module.device)

        def compute(start: int, stop: int) -> ExplainResult:
            with preserve_model_state(pl_module):
                return explain(
                    pl_module,
                    images[start:stop].to(pl_module.device),
                    self._layer_name,
                    methods,
                    targets[start:stop] if isinstance(targets, Tensor) else targets,
                    top_k=self.top_k_channels,
                    output_transform=self.output_transform,
                    options={m: o for m, o in self._fn_options.items() if m in methods},
                    layer_layout=self.layer_layout,
                )

        if self._memory is None:
            return compute(0, len(images))
        return explain_in_chunks(compute, len(images), self._memory, self._say_retry)

    def _say_retry(self, text: str) -> None:
        self._warn_once(f"memory/retry/{self._memory.chunk if self._memory else None}", f"ExplainCallback: {text}")

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        epoch, step = trainer.current_epoch, logged_step(trainer)
        clock = self.stage_seconds = StageClock()
        results: list[ExplainResult] = []
        with clock.stage("maps"):
            for limit, methods in self._due(trainer):
                try:
                    results.append(self._compute(pl_module, methods, limit))
                except Exception as err:
                    self._fail("the probe pass" if limit is None else f"the {'/'.join(methods)} pass", err, epoch)
        if not results:
            return
        result = merge_results(results)
        flat = [m for m in flat_layer_maps(result) if f"flat/{m}" not in self._warned]
        if flat and self.layer_choice is not None:
            self._warned.update(f"flat/{m}" for m in flat)
            warnings.warn(flat_warning(flat, self.layer_choice, epoch), UserWarning, stacklevel=2)
        if self.metrics:
            with clock.stage("focus and drift numbers"):
                self._guard("the focus and drift metrics", epoch, self._log_metrics, trainer, pl_module, result)
            if (spec := self._faithfulness) is not None and spec.due(epoch, is_fitting(trainer)):
                with clock.stage("faithfulness"):
                    self._guard("the faithfulness metrics", epoch, self._log_faithfulness, spec, pl_module, result)
            if (trust := self._trust) is not None and trust.due(epoch, is_fitting(trainer)):
                with clock.stage("trust"):
                    self._guard("the trust metrics", epoch, self._log_trust, trust, pl_module, result, epoch)
        with clock.stage("rendering"):
            grids = self._grids(result, epoch)
        if grids:
            with clock.stage("handing the grids to the writer"):
                self._guard("logging the images", epoch, self._write_epoch, trainer, grids, result, epoch, step)

    def _write_epoch(
        self, trainer: pl.Trainer, grids: dict[str, Tensor], result: ExplainResult, epoch: int, step: int
    ) -> None:
        """Hand the grids to the writer, with the layout text (and the dashboard's captions and numbers)."""
        assert self._probe is not None
        labels = self._probe.labels.tolist() if self._probe.labels is not None else None
        per_image = self.latest_per_image if self.latest_epoch == epoch else {}
        extras = layout_extras(
            predictions_of(result), labels, result.targets.tolist(), self._class_name, per_image, self.tag_prefix
        )
        layout = layout_json(grids, self._probe.images.shape[-2:], self.cell_size, epoch, step, extras)
        self._write(trainer, grids, {f"{self.tag_prefix}/layout": layout})

    def _log_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, result: ExplainResult) -> None:
        assert self._probe is not None
        methods = [m for m in self.methods if m in result]
        per_image, scored = score_maps(self._map_metrics, result, methods, self._probe.masks, self.tag_prefix)
        self.latest_per_image, self.latest_epoch = per_image, trainer.current_epoch
        self.latest_methods = tuple(scored)
        self._log(pl_module, summarize(per_image))
        if scored and not self._layout_written:
            self._layout_written = True
            self._sink.write_layout(trainer.loggers, scalar_layout(self.tag_prefix, scored))

    def _log_faithfulness(self, spec: Faithfulness, pl_module: pl.LightningModule, result: ExplainResult) -> None:
        assert self._probe is not None
        with preserve_model_state(pl_module):
            extra = spec.score(pl_module, self._probe.images, result, self.tag_prefix, self.output_transform)
        self.latest_per_image.update(extra)
        self._log(pl_module, summarize(extra))

    def _log_trust(self, spec: Trust, pl_module: pl.LightningModule, result: ExplainResult, epoch: int) -> None:
        assert self._probe is not None
        explainer = method_explainer(
            pl_module, self._layer_name, top_k=self.top_k_channels, output_transform=self.output_transform,
            options=self._fn_options, layer_layout=self.layer_layout,
        )  # fmt: skip
        with preserve_model_state(pl_module):
            extra = spec.score(pl_module, self._probe.images, result, self.tag_prefix, self.output_transform, explainer)
        self.latest_per_image.update(extra)
        summary = summarize(extra)
        self._log(pl_module, summary)
        for method, value in spec.failures(summary, self.tag_prefix).items():
            self._warn_once(f"sanity/{method}", sanity_warning(method, value, spec.sanity_threshold, epoch))

    def _grids(self, result: ExplainResult, epoch: int) -> dict[str, Tensor]:
        """One grid per view (a view that fails is skipped with its warning)."""
        assert self._probe is not None
        try:
            display, rows = render_probe(self._probe, result, self.mean, self.std, self._class_name)
        except Exception as err:
            self._fail("rendering the probe images", err, epoch)
            return {}
        grids: dict[str, Tensor] = {}
        for view in views(self.methods, result):
            try:
                maps = view_maps(result, view)
                if bad := nonfinite_rows(maps):
                    self._warn_once(f"nonfinite/{view}", nonfinite_warning(view, bad, epoch))
                grids[f"{self.tag_prefix}/{view}"] = view_grid(
                    view,
                    maps,
                    display,
                    rows,
                    result,
                    alpha=self.alpha,
                    colormap=self.colormap,
                    cell_size=self.cell_size,
                )
            except Exception as err:
                self._fail(f"the {view} view", err, epoch)
        return grids

    def _row_captions(self, out: ExplainResult | Mapping[str, Tensor]) -> list[str]:
        """Each probe row's caption from the logits of ``out`` (an :class:`ExplainResult`, or ``{"logits": ...}``)."""
        assert self._probe is not None
        labels = self._probe.labels.tolist() if self._probe.labels is not None else None
        if isinstance(out, ExplainResult):
            return row_captions(predictions_of(out), labels, self._class_name, out.targets.tolist())
        return row_captions(out["logits"].argmax(dim=1).tolist(), labels, self._class_name)
