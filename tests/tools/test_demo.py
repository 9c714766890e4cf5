"""The demo proves the alert: it fires for the shortcut model within 3 validation epochs, never for the clean one.

Slow (about 30 s a seed on 2 CPU cores): the full default demo, seeds 0, 1 and 2. Fast: where each run writes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lightning_explain.report import find_runs

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("shortcut_detection", ROOT / "examples" / "shortcut_detection.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shortcut_detection"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alert_fires_for_the_shortcut_model_and_never_for_the_clean_one(tmp_path, seed, capsys):
    summary = _demo().main(["--out", str(tmp_path), "--seed", str(seed), "--quiet"])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["runs"]["shortcut"]["alert_epoch"] == summary["runs"]["shortcut"]["alert_epoch"]

    shortcut, clean = written["runs"]["shortcut"], written["runs"]["clean"]
    assert shortcut["alert_epoch"] is not None and shortcut["alert_epoch"] <= 2  # within 3 validation epochs
    assert clean["alert_epoch"] is None
    for run in (shortcut, clean):
        assert [row["epoch"] for row in run["epochs"]] == list(range(6))
        assert set(run["epochs"][0]) >= {"epoch", "val_acc", "conflict_acc", "focus", "drift"}
    # The behavioural truth agrees with the attribution numbers: the shortcut model fails cue-conflicting
    # images, the clean one does not.
    assert shortcut["epochs"][-1]["conflict_acc"] < 0.3
    assert max(row["conflict_acc"] for row in clean["epochs"]) > 0.8
    # TCAV agrees: the shortcut model's class logits follow their corner cue, the clean model's do not.
    assert [row["epoch"] for row in shortcut["epochs"] if row["cue_tcav"] is not None] == [0, 5]
    assert shortcut["epochs"][-1]["cue_tcav"] >= 0.9
    assert clean["epochs"][-1]["cue_tcav"] <= 0.75  # ~0.5: no direction (seeds 0-2: 0.30, 0.61, 0.33)
    printed = capsys.readouterr().out
    assert "<- ALERT" in printed and "summary.json" in printed and "tensorboard --logdir" in printed
    assert "cue TCAV" in printed


def test_two_demo_runs_never_share_an_event_file_folder(tmp_path, monkeypatch, capsys):
    """A second run into the same --out gets new run folders: TensorBoard would mix two runs' steps in one."""

    def fit_without_training(self: pl.Trainer, *args: object, **kwargs: object) -> None:
        assert self.logger is not None  # the demo's own loggers and folders; one logged step instead of training
        self.logger.log_metrics({"epoch": 0.0}, step=0)
        self.logger.finalize("success")

    monkeypatch.setattr(pl.Trainer, "fit", fit_without_training)
    main = _demo().main
    args = ["--out", str(tmp_path), "--epochs", "1", "--train-size", "32", "--image-size", "32", "--quiet"]
    first = main(args)
    first_folders = set(find_runs(tmp_path))
    second = main(args)
    second_folders = set(find_runs(tmp_path)) - first_folders

    assert len(first_folders) == len(second_folders) == 2  # shortcut and clean, each run in new folders
    for folders, summary, version in ((first_folders, first, "version_0"), (second_folders, second, "version_1")):
        assert {Path(run["log_dir"]) for run in summary["runs"].values()} == folders
        assert all(folder.relative_to(tmp_path).parts[0] == version for folder in folders)
        assert all(len(list(folder.glob("*tfevents*"))) == 1 for folder in folders)  # still one event file each
        assert json.loads((tmp_path / version / "summary.json").read_text()) == summary
    assert json.loads((tmp_path / "summary.json").read_text()) == second  # the latest run's summary
    printed = capsys.readouterr().out
    assert f"This run's logs: {tmp_path / 'version_1'}" in printed
    assert f"tensorboard --logdir {tmp_path} " in printed
