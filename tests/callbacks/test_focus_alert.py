"""Focus and drift scalars in real Trainer runs, and FocusAlert firing, not firing, stopping and resuming."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TinyCNN, loaders, trainer
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_explain import ExplainCallback, FocusAlert

SALIENCY_LIFT = "explain/saliency/focus/lift"


class TopLeft(TinyCNN):
    """Looks only at the top-left of the image: saliency is exactly zero outside its receptive field."""

    def forward(self, x):
        f = self.features(x)
        return self.head[-1](f[:, :, :3, :3].mean((2, 3)))


def _masks(top_left: bool, n: int = 4, size: int = 16) -> torch.Tensor:
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    if top_left:
        masks[:, :6, :6] = True
    else:
        masks[:, 9:, 9:] = True
    return masks


def _explain(object_on_top_left: bool, **kwargs) -> ExplainCallback:
    probe = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs.setdefault("methods", ("saliency",))
    return ExplainCallback(
        "features.4",
        probe=probe,
        probe_object_masks=_masks(object_on_top_left),
        probe_cue_masks=_masks(not object_on_top_left),
        **kwargs,
    )


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_focus_and_drift_scalars_reach_tensorboard_and_callback_metrics(tmp_path):
    cb = _explain(object_on_top_left=True)
    es = EarlyStopping(monitor=SALIENCY_LIFT, mode="max", patience=10)
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[cb, es], max_epochs=3)
    t.fit(TopLeft(), *loaders())
    scalars = _scalars(t.logger.log_dir)
    lift = [v for _, v in scalars[SALIENCY_LIFT]]
    assert len(lift) == 3 and all(v > 0.5 for v in lift)  # all saliency sits in the top-left object mask
    cue = [v for _, v in scalars["explain/saliency/focus/energy_in_cue"]]
    assert all(v == 0.0 for v in cue)
    assert len(scalars["explain/saliency/drift/emd_prev"]) == 2  # from the second explained epoch on
    assert len(scalars["explain/saliency/drift/emd_chance"]) == 3
    assert "explain/saliency/focus/border_lift" in scalars
    assert SALIENCY_LIFT in t.callback_metrics
    assert cb.latest_per_image[SALIENCY_LIFT].shape == (4,)
    assert cb.latest_epoch == 2


def test_custom_scalar_layout_is_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[_explain(True)], max_epochs=1)
    t.fit(TopLeft(), *loaders())
    acc = EventAccumulator(t.logger.log_dir)
    acc.Reload()
    from tensorboard.plugins.custom_scalar import layout_pb2

    assert "custom_scalars__config__" in acc.Tags()["tensors"], "no custom scalar layout in the event file"
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    titles = [chart.title for category in layout.category for chart in category.chart]
    assert any("drift" in title for title in titles) and any("focus" in title for title in titles)


def test_alert_fires_after_patience_and_names_the_images(tmp_path):
    alert = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2)
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[_explain(False), alert], max_epochs=4)
    with pytest.warns(UserWarning, match=r"FocusAlert at epoch 1: .*lift = -\d.* below 0.0 for 2 .*\[0, 1, 2, 3\]"):
        t.fit(TopLeft(), *loaders())
    assert alert.fired_epoch == 1
    assert [h["bad"] for h in alert.history] == [True, True, True, True]
    assert t.current_epoch == 4  # only a warning: training went on
    fired = _scalars(t.logger.log_dir)[f"focus_alert/{SALIENCY_LIFT}/fired"]
    assert [v for _, v in fired] == [0.0, 1.0, 1.0, 1.0]


def test_alert_does_not_fire_when_the_model_looks_at_the_object(tmp_path):
    alert = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="FocusAlert")
        t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[_explain(True), alert], max_epochs=3)
        t.fit(TopLeft(), *loaders())
    assert alert.fired_epoch is None and len(alert.history) == 3


def test_alert_can_stop_training_with_the_reason(tmp_path):
    alert = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2, stop_training=True)
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[_explain(False), alert], max_epochs=10)
    with pytest.warns(UserWarning, match="Stopping training"):
        t.fit(TopLeft(), *loaders())
    assert t.current_epoch == 2 and alert.fired_epoch == 1


def test_alert_mode_above_on_the_cue(tmp_path):
    alert = FocusAlert("explain/saliency/focus/energy_in_cue", threshold=0.5, mode="above", patience=1)
    t = trainer(tmp_path, logger=False, callbacks=[_explain(False), alert], max_epochs=1)
    with pytest.warns(UserWarning, match="above 0.5"):
        t.fit(TopLeft(), *loaders())
    assert alert.fired_epoch == 0


def test_alert_counts_only_explained_epochs(tmp_path):
    alert = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2)
    cb = _explain(False, every_n_epochs=2)
    t = trainer(tmp_path, logger=False, callbacks=[cb, alert], max_epochs=4)
    with pytest.warns(UserWarning, match="FocusAlert at epoch 2"):
        t.fit(TopLeft(), *loaders())
    assert [h["epoch"] for h in alert.history] == [0, 2]


def test_alert_skips_epochs_where_its_method_was_not_due(tmp_path):
    alert = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2)
    cb = _explain(False, methods=("saliency", "gradxinput"), method_options={"saliency": {"every_n_epochs": 2}})
    t = trainer(tmp_path, logger=False, callbacks=[cb, alert], max_epochs=4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        t.fit(TopLeft(), *loaders())
    assert not [w for w in record if "was not logged" in str(w.message)]
    assert any("FocusAlert at epoch 2" in str(w.message) for w in record)
    assert [h["epoch"] for h in alert.history] == [0, 2]  # epochs 1 and 3 ran only gradxinput


def test_missing_metric_warns_once_with_what_is_logged(tmp_path):
    alert = FocusAlert("explain/gradcam/focus/lift")
    cb = ExplainCallback("features.3", num_probe=2)  # no masks: no object focus
    t = trainer(tmp_path, logger=False, callbacks=[cb, alert], max_epochs=2)
    with pytest.warns(UserWarning, match=r"'explain/gradcam/focus/lift' was not logged.*border_lift") as record:
        t.fit(TinyCNN(), *loaders())
    assert sum("was not logged" in str(w.message) for w in record) == 1


def test_alert_and_map_history_survive_a_resume(tmp_path):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    alert, cb = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2), _explain(False)
    t = trainer(tmp_path, logger=False, callbacks=[cb, alert, ckpt], enable_checkpointing=True, max_epochs=2)
    with pytest.warns(UserWarning, match="FocusAlert at epoch 1"):
        t.fit(TopLeft(), *loaders())
    first_maps = cb._map_metrics.first["saliency"].clone()

    alert2, cb2 = FocusAlert(SALIENCY_LIFT, threshold=0.0, patience=2), _explain(False)
    t2 = trainer(tmp_path, logger=False, callbacks=[cb2, alert2], max_epochs=4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="FocusAlert at")  # already fired: no second alert
        t2.fit(TopLeft(), *loaders(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert alert2.fired_epoch == 1
    assert [h["epoch"] for h in alert2.history] == [0, 1, 2, 3]
    assert torch.equal(cb2._map_metrics.first["saliency"], first_maps)  # drift_first still means epoch 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sideways"}, "mode must be"),
        ({"patience": 0}, "patience must be"),
        ({"threshold": float("nan")}, "threshold must be a finite"),
    ],
)
def test_alert_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FocusAlert(**kwargs)


def test_mask_key_errors_are_clear(tmp_path):
    cb = ExplainCallback("features.3", object_mask_key=5)
    t = trainer(tmp_path, logger=False, callbacks=[cb], max_epochs=1)
    with pytest.raises(ValueError, match=r"object_mask_key=5 selects nothing"):
        t.fit(TinyCNN(), *loaders())
