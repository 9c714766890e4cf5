"""The shared skeleton of every view (explanations, errors, filters, feature maps, TCAV, inversion).

Each view is a thin callback: this base decides *when* (validation epoch end, not the sanity check, every n epochs,
global rank zero only, or every rank under FSDP2, where a forward needs every rank), reads and keeps the probe
(the first validation samples, chosen dataset indices, or an explicit tensor, with optional masks), sends images to
the sinks and scalars to ``pl_module.log`` on every rank (rank zero's values, broadcast: ``EarlyStopping`` and
``ModelCheckpoint`` can monitor them under DDP), and turns a failure in a later epoch into one warning (``strict=True``
re-raises). Images are encoded and written in the background
(:class:`~lightning_explain.output.sinks.BackgroundWriter`);
``teardown`` and ``on_exception`` wait for them, so every image is on disk when ``fit``/``validate``/``test`` returns
or raises. Subclasses implement ``_run``, and may add ``_setup`` (checks that need the model), ``_start`` (at train
start) and ``_prepare`` (before each run, outside the failure guard). The shared defaults are in
:mod:`lightning_explain.callbacks._defaults`. Each view spells its whole signature (LightningCLI reads it)
and passes the base's arguments on by keyword, so the type checker sees every one.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from lightning_explain._lightning import Callback, is_fitting, logged_step
from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._progress import trainer_reporter
from lightning_explain.capture import resolve_layer
from lightning_explain.epoch.checks import check_display, check_positive_int, check_probe_args, fail_softly
from lightning_explain.epoch.distributed import (
    broadcast_from_zero,
    check_sharded,
    joins_every_rank,
    start_together,
    together,
    world_size,
)
from lightning_explain.epoch.joined import run_joined
from lightning_explain.epoch.probe import (
    BatchUnpacker,
    Probe,
    dataset_class_names,
    dataset_targets,
    describe_classes,
    first_val_loader,
    probe_from_dataloader,
    probe_from_dataset,
)
from lightning_explain.epoch.restore import StateProblem, probe_state, state_message
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.progress import reporting
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.output.sinks import ImageSink

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ViewCallback", "layer_name"]


def layer_name(pl_module: pl.LightningModule, layer: str | nn.Module) -> str:
    """The dotted name of ``layer`` in ``pl_module``; an unknown name raises with the closest names. (The
    default layer, for ``layer=None``, is found on the probe: :func:`~lightning_explain.epoch.maps.find_layer`.)"""
    return resolve_layer(pl_module, layer)[0]


class ViewCallback(Callback):
    """Base of the views. Not used directly.

    Args:
        every_n_epochs: run when ``current_epoch % every_n_epochs == 0`` (always under ``validate()``).
        num_probe: how many validation samples form the probe (the first ones of the first val dataloader).
        probe: an explicit probe ``[N, C, H, W]`` instead; ``probe_labels`` ``[N]`` optional.
        probe_labels: class indices for an explicit ``probe``.
        probe_indices: indices into the first validation dataset instead of the first ``num_probe``.
        probe_masks: masks ``[N, H, W]`` by name (``"object"``, ``"cue"``) for an explicit ``probe``.
        mask_keys: where each validation batch holds the masks, by name: a tuple position or a dict key.
        mean, std: the input normalisation, undone for display (without them images are min-max scaled).
        colormap: matplotlib colour map of the maps.
        alpha: heat-map opacity in the overlays, in [0, 1] (None: the view draws no overlays).
        cell_size: long side in pixels of each grid cell (at least ``min_cell_size``).
        class_names: names shown instead of class indices.
        input_key, label_key: keys of images and labels in dict batches.
        unpack_batch: a function from a batch to ``(images, labels or None)``.
        output_transform: a function from the model's output to ``[B, C]`` logits.
        tag_prefix: first part of every tag.
        strict: re-raise a failure instead of warning once and skipping the view.
    """

    #: Whether the view needs the probe batch.
    uses_probe = True
    #: The smallest ``cell_size`` the view accepts.
    min_cell_size = 8
    #: Whether integer (``uint8``) images, which the model converts itself, can be explained.
    integer_images = False

    def __init__(
        self,
        *,
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        num_probe: int = D.NUM_PROBE,
        probe: Tensor | None = None,
        probe_labels: Tensor | None = None,
        probe_indices: Sequence[int] | None = None,
        probe_masks: Mapping[str, Tensor] | None = None,
        mask_keys: Mapping[str, int | str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = D.COLORMAP,
        alpha: float | None = None,
        cell_size: int = D.CELL_SIZE,
        class_names: Sequence[str] | None = None,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        output_transform: OutputTransform = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
    ) -> None:
        super().__init__()
        check_positive_int(every_n_epochs=every_n_epochs, num_probe=num_probe)
        check_display(mean, std, colormap, cell_size, min_cell_size=self.min_cell_size, alpha=alpha)
        if probe is not None and probe_indices is not None:
            raise ValueError("pass either probe (a tensor) or probe_indices (dataset indices), not both.")
        check_probe_args(probe, probe_labels, integer_ok=self.integer_images)
        self._probe: Probe | None = None
        if probe is not None:
            labels = probe_labels.reshape(-1).long().cpu() if probe_labels is not None else None
            masks = {k: m.detach().cpu().bool() for k, m in (probe_masks or {}).items()}
            self._probe = Probe(probe.detach().cpu().clone(), labels, masks)
        self.every_n_epochs = every_n_epochs
        self.num_probe = num_probe
        self.probe_indices = list(probe_indices) if probe_indices is not None else None
        self.mask_keys = dict(mask_keys or {})
        self.mean, self.std = mean, std
        self.colormap, self.cell_size = colormap, cell_size
        if alpha is not None:
            self.alpha = alpha
        self.class_names = list(class_names) if class_names is not None else None
        self.input_key, self.label_key, self.unpack_batch = input_key, label_key, unpack_batch
        self.output_transform = output_transform
        self.tag_prefix = tag_prefix
        self.strict = strict
        self._warned: set[str] = set()
        #: The scalars of the current validation epoch end, logged on every rank by ``_publish``.
        self._scalars: dict[str, float] = {}
        self._sink = ImageSink()
        #: Set in ``setup`` under a sharded strategy the views cannot run under (FSDP v1, DeepSpeed-3): nothing runs.
        self._sharded: str | None = None
        #: Set in ``setup`` under FSDP2 (``ModelParallelStrategy``) with several ranks: every rank joins each pass.
        self._joined = False
        #: The probe before ``load_state_dict`` replaced it (None: none yet); False when nothing was restored.
        self._unrestored_probe: Probe | bool | None = False
        #: True while a joined pass runs (:meth:`_run_joined`): a failure inside it fails the whole view on every rank.
        self._in_joined = False

    # ----------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._sharded = check_sharded(trainer, type(self).__name__)
        self._joined = self._sharded is None and joins_every_rank(trainer.strategy)
        if self._joined and not trainer.is_global_zero:
            self._sink = _SilentSink()  # every rank computes; rank zero alone logs
        if self._sharded is None:
            self._setup(trainer, pl_module)
            if trainer.is_global_zero:
                self._sink.open()  # this run's image writer thread; closed at teardown
                self._guard("guarding the event file", 0, self._sink.guard, trainer.loggers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._joined:
            together(trainer.strategy, lambda: self._start_restored(trainer, pl_module), type(self).__name__)
        elif self._sharded is None:
            start_together(trainer, lambda: self._start_restored(trainer, pl_module), type(self).__name__)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._sharded is not None:
            return
        self._scalars = {}
        if self._is_due(trainer):
            self._run_view(trainer, pl_module)
        self._publish(trainer, pl_module)

    def _run_view(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the view where it runs (rank zero; every rank under FSDP2); a failure warns once (or re-raises)."""
        if self._joined:
            together(trainer.strategy, lambda: self._prepare(trainer, pl_module), type(self).__name__)
            self._run_joined(trainer, pl_module)
            return
        if not trainer.is_global_zero:
            return
        self._prepare(trainer, pl_module)
        try:
            self._run_here(trainer, pl_module)
        except Exception as err:
            self._fail("the view", err, trainer.current_epoch)

    def _run_here(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.uses_probe:
            self._ensure_probe(trainer)
        with reporting(trainer_reporter(trainer, type(self).__name__)):
            self._run(trainer, pl_module)

    def _run_joined(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under FSDP2, on every rank: the view's passes with status checks (:func:`~lightning_explain.epoch.joined.
        run_joined`). When any rank fails, every rank learns of it at once and all skip the view for this epoch
        (nothing of it is logged: images wait in a :class:`_DeferredSink` until every rank has finished), or, under
        ``strict=True``, all stop with the cause."""
        sink, deferred = self._sink, _DeferredSink()
        self._sink, self._in_joined = deferred, True
        try:
            failure = run_joined(pl_module, trainer.strategy.root_device, lambda: self._run_here(trainer, pl_module))
        finally:
            self._sink, self._in_joined = sink, False
        if failure is None:
            self._guard("logging the images", trainer.current_epoch, deferred.replay, sink)
            return
        self._scalars = {}
        owner, epoch = type(self).__name__, trainer.current_epoch
        if self.strict and failure.error is not None:
            raise failure.error
        if self.strict:
            raise RuntimeError(f"{owner} failed on global rank {failure.rank}, so every rank stops: {failure.message}")
        where = f"on global rank {failure.rank}: " if failure.rank >= 0 else ""
        cause = f"{where}{failure.message}; every rank skips this view at this epoch"
        self._fail("the view", RuntimeError(cause), epoch)

    def _publish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the scalars of this epoch on every rank: rank zero's, broadcast to the others (a few floats).

        ``EarlyStopping``, ``ModelCheckpoint`` and :class:`~lightning_explain.FocusAlert` read
        ``trainer.callback_metrics`` on every rank, so a number logged on rank zero alone (``rank_zero_only=True``)
        would be missing on the others (Lightning's callbacks share rank zero's value the same way). Called on every
        rank at every validation epoch end (the ranks need not agree on whether the view was due).
        """
        values, self._scalars = self._scalars, {}
        if world_size(trainer.strategy) > 1:
            values = trainer.strategy.broadcast(values, src=0)
        for key, value in values.items():
            pl_module.log(key, value)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """At the end of ``fit``/``validate``/``test`` (before Lightning closes the loggers): every image is written and
        the writer's thread has stopped."""
        try:
            self._sink.close()
        except Exception as err:
            self._fail("writing the images", err, trainer.current_epoch)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Training stops on an error or Ctrl+C (Lightning calls no ``teardown`` then): write the images already logged
        before the loggers close, and stop the writer's thread."""
        try:
            self._sink.close()
        except Exception as err:  # the run's own exception is what the user must see: only warn
            warnings.warn(f"{type(self).__name__}: {err}", UserWarning, stacklevel=2)

    def state_dict(self) -> dict[str, Any]:
        if self._probe is None:
            return {}
        return {
            "probe_images": self._probe.images,
            "probe_labels": self._probe.labels,
            "probe_masks": dict(self._probe.masks),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the probe; a malformed state warns and leaves a fresh probe to be taken (``strict=True``: raises a
        ``ValueError`` naming the problem, before training goes on). Missing keys take their defaults."""
        try:
            probe = probe_state(state_dict)
        except StateProblem as err:
            self._bad_state(err, "with a fresh probe")
            return
        if probe is not None:
            self._unrestored_probe, self._probe = self._probe, probe

    def _bad_state(self, problem: Exception, fresh: str) -> None:
        message = state_message(type(self).__name__, problem, strict=self.strict, fresh=fresh)
        if self.strict:
            raise ValueError(message) from problem
        warnings.warn(message, UserWarning, stacklevel=3)

    def _start_restored(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``_start``; when it fails on a probe restored from a checkpoint (one the model no longer takes: another
        image size or channel count), warn and start again with a fresh probe (``strict=True``: a clear error)."""
        if self._unrestored_probe is False:
            self._start(trainer, pl_module)
            return
        try:
            self._start(trainer, pl_module)
        except Exception as err:
            shape = tuple(self._probe.images.shape) if self._probe is not None else None
            problem = StateProblem(f"the model cannot take its probe {shape}: {type(err).__name__}: {err}")
            self._bad_state(problem, "with a fresh probe")
            self._forget_restored()
            self._start(trainer, pl_module)
        finally:
            self._unrestored_probe = False

    def _forget_restored(self) -> None:
        """Drop what was restored with the probe: back to the probe given to ``__init__`` (or none: read afresh)."""
        probe = self._unrestored_probe
        self._probe = probe if isinstance(probe, Probe) else None

    # ----------------------------------------------------------------------------------------- helpers

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Checks that need the model (layer names, arguments): raise with the fix. Runs on every rank."""

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At train start, on global rank zero: read the probe, so that bad data fails before the first step."""
        if self.uses_probe and trainer.enable_validation:
            self._ensure_probe(trainer)

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Before each due run, outside the failure guard (what it raises stops the fit): nothing by default."""

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def _is_due(self, trainer: pl.Trainer) -> bool:
        return not is_fitting(trainer) or trainer.current_epoch % self.every_n_epochs == 0

    def _ensure_probe(self, trainer: pl.Trainer) -> Probe:
        if self._probe is None:
            probe = self._read_probe(trainer)
            check_inputs(probe.images)
            self._probe = probe
        return self._probe

    def _read_probe(self, trainer: pl.Trainer) -> Probe:
        """The probe from the first validation dataloader: ``probe_indices`` or its first ``num_probe`` samples.

        When every rank joins the pass (FSDP2), rank zero reads it and sends it to every rank (an iterable loader
        gives each rank a different shard; every rank must explain the same images)."""
        if self._joined:
            name = type(self).__name__
            return broadcast_from_zero(trainer.strategy, lambda: self._read_local_probe(trainer), name)
        return self._read_local_probe(trainer)

    def _read_local_probe(self, trainer: pl.Trainer) -> Probe:
        loader = first_val_loader(trainer)
        if loader is None:
            raise ValueError(
                f"{type(self).__name__} found no validation data and no probe. Give the Trainer validation data, or "
                "pass probe=<[N, C, H, W] tensor>."
            )
        unpack: dict[str, Any] = {
            "input_key": self.input_key,
            "label_key": self.label_key,
            "unpacker": self.unpack_batch,
            "mask_keys": self.mask_keys,
        }
        if self.class_names is None:  # ImageFolder, CIFAR...: name the classes as the dataset does
            self.class_names = dataset_class_names(getattr(loader, "dataset", None))
        if self.probe_indices is not None:
            collate = getattr(loader, "collate_fn", None)
            probe = probe_from_dataset(loader.dataset, self.probe_indices, collate_fn=collate, **unpack)
        else:
            probe = probe_from_dataloader(loader, self.num_probe, owner=type(self).__name__, **unpack)
        if probe.labels is not None:
            self._report_classes(trainer, probe.labels, dataset_targets(getattr(loader, "dataset", None)))
        return probe

    def _report_classes(self, trainer: pl.Trainer, labels: Tensor, known: Sequence[int] | None) -> None:
        """Say on the console which classes the probe covers; warn when it misses a class the dataset has."""
        line, missing = describe_classes(labels, self.class_names, known)
        name = type(self).__name__
        namespace = "lightning.pytorch" if type(trainer).__module__.startswith("lightning.") else "pytorch_lightning"
        logging.getLogger(f"{namespace}.lightning_explain").info(f"{name}'s probe: {line}.")
        if missing is not None:
            self._warn_once(
                "probe-classes",
                f"{name}: {missing} (the probe covers {line}). Raise num_probe, or choose the images with "
                "probe_indices=[...].",
            )

    def _class_name(self, index: int) -> str:
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    def _write(self, trainer: pl.Trainer, grids: dict[str, Tensor], texts: Mapping[str, str] | None = None) -> None:
        """Send ``grids`` (and TensorBoard ``texts``, tag -> text) to the loggers at the current step."""
        step = logged_step(trainer)
        self._sink.write(
            trainer.loggers, grids, step=step, epoch=trainer.current_epoch, default_root_dir=trainer.default_root_dir
        )
        for tag, text in (texts or {}).items():
            self._sink.write_text(trainer.loggers, tag, text, step=step)

    def _guard(self, what: str, epoch: int, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``fn``; a failure warns once and skips ``what`` (``strict=True``: re-raises)."""
        try:
            fn(*args, **kwargs)
        except Exception as err:
            self._fail(what, err, epoch)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)

    def _log(self, pl_module: pl.LightningModule, values: Mapping[str, float]) -> None:
        """Keep ``values`` (tag -> number) for :meth:`_publish`, which logs them on every rank at the epoch end."""
        self._scalars.update({key: float(value) for key, value in values.items()})

    def _fail(self, view: str, err: Exception, epoch: int) -> None:
        if self._in_joined:  # a part of a joined pass failed: the whole view fails, on every rank (_run_joined)
            raise err
        fail_softly(type(self).__name__, view, err, epoch, strict=self.strict, warned=self._warned)


class _SilentSink(ImageSink):
    """The sink of ranks other than zero when every rank computes the views: writes nothing."""

    def open(self) -> None:
        pass

    def write_layout(self, loggers: Any, layout: Any) -> None:
        pass

    def write_text(self, loggers: Any, tag: str, text: str, *, step: int) -> None:
        pass

    def write(self, loggers: Any, images: Any, *, step: int, epoch: int, default_root_dir: str) -> list[Any]:
        return []


class _DeferredSink(ImageSink):
    """Holds what a view hands to its sink during a joined pass; :meth:`replay` gives it to the real sink once every
    rank has finished (a view that fails on any rank logs nothing at that epoch)."""

    def __init__(self) -> None:
        super().__init__(background=False)
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def write_layout(self, loggers: Any, layout: Any) -> None:
        self._calls.append(("write_layout", (loggers, layout), {}))

    def write_text(self, loggers: Any, tag: str, text: str, *, step: int) -> None:
        self._calls.append(("write_text", (loggers, tag, text), {"step": step}))

    def write(self, loggers: Any, images: Any, *, step: int, epoch: int, default_root_dir: str) -> list[Any]:
        kwargs = {"step": step, "epoch": epoch, "default_root_dir": default_root_dir}
        self._calls.append(("write", (loggers, images), kwargs))
        return []

    def replay(self, sink: ImageSink) -> None:
        """Give every held call to ``sink``, in order."""
        for name, args, kwargs in self._calls:
            getattr(sink, name)(*args, **kwargs)
        self._calls = []
