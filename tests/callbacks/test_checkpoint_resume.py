"""Resuming from checkpoints: one written by an earlier release, and ones whose callback state is missing or
malformed (a warning and a fresh probe, or a clear error under ``strict=True``; never a crash deep inside
``load_state_dict``).

The checkpoints of earlier releases are kept in tests/callbacks/data/ (``checkpoint_v<version>.ckpt``, made by
``python tests/callbacks/data/make_checkpoint.py``): every one of them is resumed by a real ``Trainer.fit``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN, make_dataset, trainer
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from lightning_explain import ExplainCallback, FocusAlert

DATA = Path(__file__).parent / "data"
KEPT = sorted(DATA.glob("checkpoint_v*.ckpt"))
CURRENT = DATA / "checkpoint_v0.1.0.ckpt"
MONITOR, THRESHOLD = "explain/gradcam/focus/border_lift", 10.0  # as in data/make_checkpoint.py
#: The probe the kept checkpoints hold (make_checkpoint.py: the first 4 samples of make_dataset(24, seed=2)).
KEPT_PROBE = make_dataset(24, seed=2).tensors
#: The validation data of the resumed runs: a fresh probe is its first 4 samples.
NEW_VAL = make_dataset(24, seed=99)


class Steps(Callback):
    """Counts the training batches the resumed run starts."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args: Any) -> None:
        self.batches += 1


def _resume(
    tmp_path: Path, ckpt: Path, edit: Callable[[dict[str, Any]], None] | None = None, *, strict: bool = False
) -> tuple[ExplainCallback, FocusAlert, Steps, list[str]]:
    """Fit epoch 2 (of 3) from ``ckpt``, after ``edit`` changed its callback states; the callbacks and warnings."""
    if edit is not None:
        checkpoint = torch.load(ckpt, weights_only=True)
        edit(checkpoint["callbacks"])
        ckpt = tmp_path / "edited.ckpt"
        torch.save(checkpoint, ckpt)
    view = ExplainCallback(num_probe=4, strict=strict)
    alert = FocusAlert(MONITOR, threshold=THRESHOLD, patience=1, stop_training=False)
    steps = Steps()
    run = trainer(tmp_path, logger=False, callbacks=[view, alert, steps], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = DataLoader(make_dataset(24, seed=1), batch_size=8), DataLoader(NEW_VAL, batch_size=8)
        run.fit(TinyCNN(), train, val, ckpt_path=str(ckpt))
    return view, alert, steps, [str(w.message) for w in caught]


def _key(states: dict[str, Any], name: str) -> str:
    return next(key for key in states if key.startswith(name))


def _explain(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda states: edit(states[_key(states, "ExplainCallback")])


@pytest.mark.parametrize("ckpt", KEPT, ids=[p.stem for p in KEPT])
def test_a_checkpoint_of_an_earlier_release_resumes_with_its_probe_history_and_alert_counts(tmp_path, ckpt):
    assert CURRENT in KEPT  # this release's checkpoint is kept too
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    view, alert, steps, caught = _resume(tmp_path, ckpt)
    assert steps.batches == 3  # epoch 2 only: the loops were restored
    assert torch.equal(view._probe.images, KEPT_PROBE[0][:4])  # the checkpoint's probe, not the new data's
    assert torch.equal(view._probe.labels, KEPT_PROBE[1][:4])
    first = saved[_key(saved, "ExplainCallback")]["map_history"]["first"]
    assert set(first) == set(view._map_metrics.first) == {"gradcam", "saliency"}
    assert all(torch.equal(view._map_metrics.first[m], first[m]) for m in first)  # drift still measured from epoch 0
    assert [item["epoch"] for item in alert.history] == [0, 1, 2]
    assert not [text for text in caught if "malformed" in text or "cannot resume" in text]


BROKEN_PROBES = {
    "images_not_a_tensor": (lambda s: s.update(probe_images=s["probe_images"].tolist()), "probe_images is a list"),
    "images_3d": (lambda s: s.update(probe_images=s["probe_images"][0]), "probe_images has shape (3, 16, 16)"),
    "labels_too_short": (lambda s: s.update(probe_labels=s["probe_labels"][:3]), "probe_labels has shape (3,)"),
    "labels_float": (lambda s: s.update(probe_labels=s["probe_labels"].float()), "not a tensor of class indices"),
    "masks_not_a_dict": (lambda s: s.update(probe_masks=[1, 2]), "probe_masks is a list, not a dict"),
    "mask_wrong_size": (lambda s: s.update(probe_masks={"object": torch.ones(4, 8, 8)}), "probe mask 'object'"),
    # A tensor where a dict belongs: its truth value is ambiguous (this crashed load_state_dict once).
    "masks_a_tensor": (lambda s: s.update(probe_masks=torch.zeros(2, 8, 8)), "probe_masks is a Tensor, not a dict"),
}


def test_a_malformed_probe_in_the_checkpoint_warns_and_a_fresh_probe_is_taken(tmp_path):
    edit, problem = BROKEN_PROBES["images_3d"]
    view, _, steps, caught = _resume(tmp_path, CURRENT, _explain(edit))
    said = [text for text in caught if "its state in the checkpoint is malformed" in text]
    assert len(said) == 1 and problem in said[0] and "starting with a fresh probe" in said[0], caught
    assert said[0].startswith("ExplainCallback: ")
    assert torch.equal(view._probe.images, NEW_VAL.tensors[0][:4])  # read afresh from the validation data
    assert view._map_metrics.first.keys() == {"gradcam", "saliency"}  # a new history, from the fresh probe
    assert steps.batches == 3


@pytest.mark.parametrize("case", BROKEN_PROBES)
def test_each_kind_of_malformed_probe_state_is_named_and_nothing_is_restored(case):
    # The same path as above without a Trainer, for every kind of damage: load_state_dict warns, keeps nothing.
    edit, problem = BROKEN_PROBES[case]
    saved = torch.load(CURRENT, weights_only=True)["callbacks"]
    state = saved[_key(saved, "ExplainCallback")]
    edit(state)
    view = ExplainCallback(num_probe=4)
    with pytest.warns(UserWarning, match="its state in the checkpoint is malformed") as record:
        view.load_state_dict(state)
    assert problem in str(record[0].message)
    assert view._probe is None and view._map_metrics.first == {}


def test_a_malformed_map_history_warns_and_the_history_starts_again_with_the_probe_kept(tmp_path):
    def edit(state: dict[str, Any]) -> None:
        state["map_history"]["first"]["gradcam"] = state["map_history"]["first"]["gradcam"][:2]

    view, _, _, caught = _resume(tmp_path, CURRENT, _explain(edit))
    said = [text for text in caught if "its state in the checkpoint is malformed" in text]
    assert len(said) == 1 and "map_history['first']['gradcam'] is a tensor of shape (2, 16, 16)" in said[0]
    assert "starting a new map history" in said[0]
    assert torch.equal(view._probe.images, KEPT_PROBE[0][:4])  # the probe itself was fine
    saved = torch.load(CURRENT, weights_only=True)["callbacks"]
    first = saved[_key(saved, "ExplainCallback")]["map_history"]["first"]["saliency"]
    assert not torch.equal(view._map_metrics.first["saliency"], first)  # started again at the resumed epoch


def test_a_probe_the_model_no_longer_takes_warns_and_a_fresh_probe_is_taken(tmp_path):
    # One channel where the model's first convolution takes three (as after a change of the input pipeline).
    view, _, _, caught = _resume(tmp_path, CURRENT, _explain(lambda s: s.update(probe_images=s["probe_images"][:, :1])))
    said = [text for text in caught if "its state in the checkpoint is malformed" in text]
    assert len(said) == 1 and "the model cannot take its probe (4, 1, 16, 16): RuntimeError" in said[0], caught
    assert torch.equal(view._probe.images, NEW_VAL.tensors[0][:4])
    assert view.layer_choice is not None and view._map_metrics.first.keys() == {"gradcam", "saliency"}


@pytest.mark.parametrize("case", ["images_3d", "probe_does_not_fit"])
def test_under_strict_a_malformed_state_is_a_clear_error_before_any_training(tmp_path, case):
    if case == "images_3d":
        edit, problem = BROKEN_PROBES[case]
    else:
        edit, problem = (lambda s: s.update(probe_images=s["probe_images"][:, :1])), "cannot take its probe"
    steps = Steps()
    with pytest.raises(ValueError, match="ExplainCallback cannot resume from this checkpoint") as raised:
        checkpoint = torch.load(CURRENT, weights_only=True)
        _explain(edit)(checkpoint["callbacks"])
        torch.save(checkpoint, tmp_path / "edited.ckpt")
        view = ExplainCallback(num_probe=4, strict=True)
        run = trainer(tmp_path, logger=False, callbacks=[view, steps], max_epochs=3)
        train = DataLoader(make_dataset(24, seed=1), batch_size=8)
        run.fit(TinyCNN(), train, DataLoader(NEW_VAL, batch_size=8), ckpt_path=str(tmp_path / "edited.ckpt"))
    assert problem in str(raised.value) and "Resume with strict=False to start with a fresh probe" in str(raised.value)
    assert steps.batches == 0


def test_a_malformed_focus_alert_state_warns_and_counts_afresh(tmp_path):
    def edit(states: dict[str, Any]) -> None:
        states[_key(states, "FocusAlert")].update(bad_epochs="two", history=None)

    _, alert, _, caught = _resume(tmp_path, CURRENT, edit)
    said = [text for text in caught if text.startswith("FocusAlert: its state in the checkpoint is malformed")]
    assert len(said) == 1 and "bad_epochs is str ('two'), not a count" in said[0]
    assert [item["epoch"] for item in alert.history] == [2]  # counting from the resumed epoch


def test_a_checkpoint_without_the_callbacks_state_resumes_with_a_fresh_probe(tmp_path):
    # A checkpoint written before the callbacks were added: Lightning does not call load_state_dict at all.
    def edit(states: dict[str, Any]) -> None:
        for name in ("ExplainCallback", "FocusAlert"):
            del states[_key(states, name)]

    view, alert, steps, caught = _resume(tmp_path, CURRENT, edit)
    assert torch.equal(view._probe.images, NEW_VAL.tensors[0][:4])
    assert [item["epoch"] for item in alert.history] == [2] and steps.batches == 3
    assert not [text for text in caught if "malformed" in text]


def test_a_map_history_part_that_is_a_tensor_warns_and_keeps_the_probe():
    saved = torch.load(CURRENT, weights_only=True)["callbacks"]
    state = saved[_key(saved, "ExplainCallback")]
    state["map_history"]["first"] = torch.zeros(2, 4, 4)
    view = ExplainCallback(num_probe=4)
    with pytest.warns(UserWarning, match="starting a new map history") as record:
        view.load_state_dict(state)
    assert "map_history['first'] is a Tensor, not a dict" in str(record[0].message)
    assert view._probe is not None and view._map_metrics.first == {}
