"""FocusAlert: warn, or stop, when the model keeps looking at the wrong place.

Works like ``EarlyStopping`` on a focus metric that :class:`~lightning_explain.ExplainCallback` logs (or any
logged metric): when the value stays on the wrong side of ``threshold`` for ``patience`` explained validation
epochs, it warns once with the epoch, the value and the probe images that look at the background, and, with
``stop_training=True``, stops the fit with that reason.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

from lightning_explain._lightning import Callback, is_fitting, logged_step
from lightning_explain.callbacks.explain import ExplainCallback
from lightning_explain.epoch.checks import check_int
from lightning_explain.epoch.restore import StateProblem, focus_alert_state, state_message

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["FocusAlert"]


class FocusAlert(Callback):
    """Alert when a focus metric stays bad for ``patience`` validation epochs.

    Args:
        monitor: a logged metric, by default the Grad-CAM lift over the object's area (0 = no better than a
            uniform map; needs ``object_mask_key``, masks or boxes). Without either, :meth:`without_masks` watches
            how spread out the map is (``".../focus/spread"``, high is bad); ``".../focus/energy_in_cue"`` a known
            spurious cue.
        threshold: the boundary between good and bad values.
        mode: ``"below"``: values under ``threshold`` are bad; ``"above"``: values over it are bad.
        patience: consecutive bad epochs before the alert fires (NaN epochs neither count nor reset).
        stop_training: also stop the fit (``trainer.should_stop``) when the alert fires.
        name: a label used in the logged metrics and messages (default: ``monitor``).
        gate: a logged metric that must be at least ``gate_threshold`` for an epoch to be judged, e.g. ``"val_acc"``:
            before the model predicts better than chance its maps say nothing about *what* it learned (an untrained
            model's maps are spread out and off the object too), so such epochs neither count nor reset.
        gate_threshold: the least value of ``gate`` at which an epoch is judged.

    Logged metrics (to every logger, at the step of the epoch's validation metrics, each validation epoch during
    ``fit``):
        - ``focus_alert/{name}/bad_epochs``: the current run of consecutive bad epochs.
        - ``focus_alert/{name}/fired``: 1.0 from the epoch the alert fired on, else 0.0.

    Attributes:
        fired_epoch: the epoch the alert fired, or None.
        history: ``[{"epoch", "value", "bad"}, ...]`` for each epoch seen; saved in checkpoints.

    Example:
        >>> alert = FocusAlert("explain/gradcam/focus/lift", threshold=0.1, patience=2)
    """

    #: The recommended no-mask monitor (see :meth:`without_masks`): Grad-CAM's ``spread``, high is bad.
    NO_MASK_MONITOR = "explain/gradcam/focus/spread"
    #: Its threshold, chosen on NaturalShortcut runs with seeds other than the benchmark's (docs/guides/
    #: shortcuts_natural.md); objects that fill much less or much more of the image may need another one.
    NO_MASK_THRESHOLD = 0.55

    @classmethod
    def without_masks(
        cls,
        threshold: float | None = None,
        patience: int = 2,
        stop_training: bool = False,
        tag_prefix: str = "explain",
        gate: str | None = None,
        gate_threshold: float = 0.0,
    ) -> FocusAlert:
        """The alert for users without masks or boxes: Grad-CAM's ``spread`` above ``threshold`` (default
        :attr:`NO_MASK_THRESHOLD`) for ``patience`` epochs: the map covers most of the image, as it does when the
        model reads a background texture. Pass ``gate="val_acc", gate_threshold=...`` (clearly above chance) so the
        spread-out maps of a model that has not learned yet are not judged.

        Example:
            >>> alert = FocusAlert.without_masks(gate="val_acc", gate_threshold=0.6)
            >>> alert.monitor, alert.mode, alert.threshold
            ('explain/gradcam/focus/spread', 'above', 0.55)
        """
        chosen = cls.NO_MASK_THRESHOLD if threshold is None else threshold
        return cls(
            f"{tag_prefix}/gradcam/focus/spread",
            chosen,
            "above",
            patience,
            stop_training,
            name="no_masks",
            gate=gate,
            gate_threshold=gate_threshold,
        )

    def __init__(
        self,
        monitor: str = "explain/gradcam/focus/lift",
        threshold: float = 0.0,
        mode: Literal["below", "above"] = "below",
        patience: int = 2,
        stop_training: bool = False,
        name: str | None = None,
        gate: str | None = None,
        gate_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("below", "above"):
            raise ValueError(f"mode must be 'below' or 'above'; got {mode!r}.")
        check_int("patience", patience)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number; got {threshold!r}.")
        self.monitor = monitor
        self.threshold = float(threshold)
        self.mode = mode
        self.patience = patience
        self.stop_training = stop_training
        self.name = name or monitor
        if not math.isfinite(gate_threshold):
            raise ValueError(f"gate_threshold must be a finite number; got {gate_threshold!r}.")
        self.gate, self.gate_threshold = gate, float(gate_threshold)
        self.fired_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self._warned_missing = False
        self._warned_nan = False
        self._warned_gate = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, threshold=self.threshold, mode=self.mode)

    def _is_bad(self, value: float) -> bool:
        return value < self.threshold if self.mode == "below" else value > self.threshold

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not is_fitting(trainer):
            return
        stop = False
        if trainer.is_global_zero:
            stop = self._check(trainer)
        if self.stop_training:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
            if stop:
                trainer.should_stop = True

    def _source(self, trainer: pl.Trainer) -> ExplainCallback | None:
        """The ExplainCallback that logs the monitored metric (by its tag prefix), if any."""
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ExplainCallback) and self.monitor.startswith(f"{callback.tag_prefix}/"):
                return callback
        return None

    def _check(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch
        source = self._source(trainer)
        if source is not None and source.latest_epoch != epoch:
            return False  # ExplainCallback did not explain this epoch (every_n_epochs): nothing new
        if source is not None:
            method = self.monitor[len(source.tag_prefix) + 1 :].split("/")[0]
            if method in source.methods and method not in source.latest_methods:
                return False  # that method has its own every_n_epochs and was not due this epoch
        fresh = source is None or self.monitor in source.latest_per_image  # else a stale value from before
        value = trainer.callback_metrics.get(self.monitor) if fresh else None
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                known = sorted(k for k in trainer.callback_metrics if "focus" in k) or sorted(trainer.callback_metrics)
                warnings.warn(
                    f"FocusAlert: the metric {self.monitor!r} was not logged at epoch {epoch}. Logged: {known}. "
                    "Object focus needs ExplainCallback(object_mask_key=...) (masks or boxes); without either use "
                    "FocusAlert.without_masks() (Grad-CAM's spread).",
                    UserWarning,
                    stacklevel=2,
                )
            return False
        number = float(value)
        gated = self._gated(trainer)
        if gated:
            number = math.nan  # not judged: neither counts nor resets
        if math.isnan(number) and not gated and not self._warned_nan:
            self._warned_nan = True
            warnings.warn(
                f"FocusAlert: {self.monitor!r} is NaN at epoch {epoch}, so it cannot count towards the alert (NaN "
                "epochs neither count nor reset). The median is NaN when the number is undefined for most probe "
                "images, e.g. border_lift on a grid so coarse that the border band covers every cell (pass "
                "ExplainCallback(layer=<an earlier block>) or feed larger images), or constant maps.",
                UserWarning,
                stacklevel=2,
            )
        bad = not math.isnan(number) and self._is_bad(number)
        if not math.isnan(number):
            self.bad_epochs = self.bad_epochs + 1 if bad else 0
        self.history.append({"epoch": epoch, "value": number, "bad": bad})
        fire = self.fired_epoch is None and self.bad_epochs >= self.patience
        if fire:
            self.fired_epoch = epoch
            self._warn(epoch, number, source)
        fired = 0.0 if self.fired_epoch is None else 1.0
        for logger in trainer.loggers:
            logger.log_metrics(
                {
                    f"focus_alert/{self.name}/bad_epochs": float(self.bad_epochs),
                    f"focus_alert/{self.name}/fired": fired,
                },
                step=logged_step(trainer),
            )
        return fire and self.stop_training

    def _gated(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch is not judged because ``gate`` is below ``gate_threshold`` (or not logged)."""
        if self.gate is None:
            return False
        value = trainer.callback_metrics.get(self.gate)
        if value is None:
            if not self._warned_gate:
                self._warned_gate = True
                warnings.warn(
                    f"FocusAlert: the gate metric {self.gate!r} was not logged at epoch {trainer.current_epoch}; the "
                    "epoch is not judged. Log it (e.g. self.log('val_acc', ...)) or pass gate=None.",
                    UserWarning,
                    stacklevel=3,
                )
            return True
        return not float(value) >= self.gate_threshold

    def _warn(self, epoch: int, value: float, source: ExplainCallback | None) -> None:
        side = "below" if self.mode == "below" else "above"
        detail = ""
        if source is not None:
            per_image = source.latest_per_image[self.monitor].tolist()
            culprits = [i for i, v in enumerate(per_image) if not math.isnan(v) and self._is_bad(v)]
            values = ", ".join(f"#{i}: {per_image[i]:.2f}" for i in culprits)
            detail = f" Probe images on the wrong side: {culprits} ({values})."
        action = " Stopping training." if self.stop_training else ""
        warnings.warn(
            f"FocusAlert at epoch {epoch}: {self.monitor} = {value:.3f} has been {side} {self.threshold} for "
            f"{self.bad_epochs} validation epochs: the model looks at the background, not the object.{detail}"
            f"{action}",
            UserWarning,
            stacklevel=2,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"fired_epoch": self.fired_epoch, "bad_epochs": self.bad_epochs, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters (missing keys: defaults); a malformed state warns and starts the counts afresh."""
        try:
            self.fired_epoch, self.bad_epochs, self.history = focus_alert_state(state_dict)
        except StateProblem as err:
            warnings.warn(state_message("FocusAlert", err, strict=False, fresh="counting afresh"), stacklevel=2)
