"""ExplainCallback(trust=...) in real Trainer runs: the values reach TensorBoard, training is unchanged, a failed
sanity check warns once per method; and NaN from an empty cue mask is logged and tolerated."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import TinyCNN, loaders, read_event_scalars, trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_explain import ExplainCallback, FocusAlert
from lightning_explain.epoch.trust_schedule import TRUST_NAMES, Trust

FAST = {"every_n_epochs": 1, "max_images": 2, "samples": 2, "runs": 6}


def _callback(**kwargs) -> ExplainCallback:
    probe = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs.setdefault("methods", ("gradcam", "saliency"))
    return ExplainCallback("features.3", probe=probe, **kwargs)


def _fit(tmp_path, callbacks, epochs=2) -> tuple[TinyCNN, object]:
    torch.manual_seed(0)
    model = TinyCNN()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=callbacks, max_epochs=epochs)
    t.fit(model, *loaders())
    return model, t


def test_trust_values_reach_tensorboard_and_training_is_unchanged(tmp_path):
    plain, _ = _fit(tmp_path / "plain", [])
    cb = _callback(trust={**FAST, "sanity_threshold": 1.0})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*sanity check.*")  # threshold 1.0: nothing can fail
        model, t = _fit(tmp_path / "trust", [cb])
    for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # bit-identical training with the trust metrics on
    scalars = read_event_scalars(t.logger.log_dir)
    for method in ("gradcam", "saliency"):
        for name in (n for names in TRUST_NAMES.values() for n in names):
            tag = f"explain/{method}/trust/{name}"
            assert len(scalars[tag]) == 2, tag  # both epochs
            assert cb.latest_per_image[tag].shape == (2,)
    assert all(math.isfinite(v) for _, v in scalars["explain/saliency/trust/mprt_spearman"])
    assert "trust" in cb.stage_seconds


def test_failed_sanity_check_warns_once_per_method(tmp_path):
    cb = _callback(trust={**FAST, "tests": ["randomisation"], "sanity_threshold": -1.0})
    with pytest.warns(UserWarning, match="fails the model-randomisation sanity check") as record:
        _fit(tmp_path, [cb], epochs=3)
    sanity = [str(w.message) for w in record if "sanity check" in str(w.message)]
    assert len(sanity) == 2 and any("gradcam" in m for m in sanity) and any("saliency" in m for m in sanity)
    assert "explain/gradcam/trust/max_sensitivity" not in cb.latest_per_image  # only the chosen tests


def test_trust_is_off_by_default_and_options_are_checked():
    assert _callback()._trust is None
    assert Trust.from_option(True) == Trust()
    with pytest.raises(ValueError, match="trust must be True, False or a dict with keys"):
        _callback(trust={"radius_": 1})
    with pytest.raises(ValueError, match=r"trust\['tests'\] must be a non-empty subset"):
        _callback(trust={"tests": ["nope"]})
    with pytest.raises(ValueError, match=r"trust\['radius'\] must be a number > 0"):
        _callback(trust={"radius": 0})


def test_empty_cue_masks_log_nan_and_focus_alert_tolerates_it(tmp_path):
    probe = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    objects = torch.zeros(4, 16, 16, dtype=torch.bool)
    objects[:, 4:12, 4:12] = True
    cb = ExplainCallback(
        "features.3", ("saliency",), probe=probe, probe_object_masks=objects,
        probe_cue_masks=torch.zeros(4, 16, 16, dtype=torch.bool),  # a data set without a cue
    )  # fmt: skip
    alert = FocusAlert("explain/saliency/focus/energy_in_cue", threshold=0.1, mode="above", patience=1)
    _, t = _fit(tmp_path, [cb, alert])
    cue = read_event_scalars(t.logger.log_dir)["explain/saliency/focus/energy_in_cue"]
    assert len(cue) == 2 and all(math.isnan(v) for _, v in cue)  # undefined, not 0.0
    assert alert.fired_epoch is None and [h["bad"] for h in alert.history] == [False, False]
