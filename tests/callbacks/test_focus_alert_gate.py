"""FocusAlert's gate (judge an epoch only once a metric such as val_acc is high enough) and its no-mask preset."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import TinyCNN, loaders, trainer

from lightning_explain import ExplainCallback, FocusAlert


class Gated(TinyCNN):
    """Logs ``val_gate`` = 0.5 every validation epoch."""

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("val_gate", 0.5)


def _fit(tmp_path, alert: FocusAlert, epochs: int = 3) -> None:
    explain = ExplainCallback("features.3", num_probe=4, methods=("gradcam",))
    trainer(tmp_path, logger=False, callbacks=[explain, alert], max_epochs=epochs).fit(Gated(), *loaders())


def test_gate_below_its_threshold_neither_counts_nor_fires(tmp_path) -> None:
    # spread is always > 0, so every judged epoch is bad.
    alert = FocusAlert("explain/gradcam/focus/spread", 0.0, "above", patience=1, gate="val_gate", gate_threshold=0.6)
    _fit(tmp_path, alert)
    assert alert.fired_epoch is None and alert.bad_epochs == 0
    assert len(alert.history) == 3 and all(math.isnan(h["value"]) and not h["bad"] for h in alert.history)


def test_gate_at_or_above_its_threshold_lets_the_alert_fire(tmp_path) -> None:
    alert = FocusAlert("explain/gradcam/focus/spread", 0.0, "above", patience=2, gate="val_gate", gate_threshold=0.5)
    _fit(tmp_path, alert)
    assert alert.fired_epoch == 1 and alert.bad_epochs == 3


def test_a_gate_that_is_not_logged_warns_once_and_judges_nothing(tmp_path) -> None:
    alert = FocusAlert("explain/gradcam/focus/spread", 0.0, "above", patience=1, gate="val_missing")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, alert, epochs=2)
    assert alert.fired_epoch is None
    assert sum("gate metric 'val_missing' was not logged" in str(w.message) for w in caught) == 1


def test_without_masks_watches_gradcam_spread(tmp_path) -> None:
    preset = FocusAlert.without_masks()
    assert (preset.monitor, preset.mode, preset.threshold) == (
        "explain/gradcam/focus/spread",
        "above",
        FocusAlert.NO_MASK_THRESHOLD,
    )
    never = FocusAlert.without_masks(threshold=1.0)  # spread is at most 1
    always = FocusAlert.without_masks(threshold=0.0, patience=1)
    explain = ExplainCallback("features.3", num_probe=4, methods=("gradcam",))
    trainer(tmp_path, logger=False, callbacks=[explain, never, always], max_epochs=2).fit(Gated(), *loaders())
    assert never.fired_epoch is None and always.fired_epoch == 0
    assert 0.0 < always.history[0]["value"] <= 1.0


def test_gate_threshold_must_be_finite() -> None:
    with pytest.raises(ValueError, match="gate_threshold must be a finite number"):
        FocusAlert(gate="val_acc", gate_threshold=float("nan"))
    assert torch.isfinite(torch.tensor(FocusAlert.NO_MASK_THRESHOLD))
