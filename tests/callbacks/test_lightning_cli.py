"""LightningCLI builds every callback from YAML; the example config trains and logs.

To cover a new callback: export it from ``lightning_explain.callbacks``; if it needs arguments, add its minimal
YAML ``init_args`` to ``MINIMAL_ARGS``.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import read_event_images, require_module

import lightning_explain.callbacks as callbacks

require_module("jsonargparse")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "config.yaml"
#: YAML init_args for callbacks that cannot be built with their defaults alone.
MINIMAL_ARGS: dict[str, dict[str, Any]] = {
    "ActivationMaximization": {"channels": {"features.0": [0]}, "classes": [0]},
    "FeatureInversion": {"layer": "features.3"},
    "TCAVCallback": {
        "layer": "features.6",
        "concepts": {"red": "test_tcav:RED"},  # an import path: the YAML form of a tensor
    },
}
#: A tiny model and data module for parsing only (nothing is trained in the parse tests).
BASE = {
    "model": {"class_path": "lightning_explain.tools.demo.SmallCNN"},
    "data": {"class_path": "lightning_explain.data.ShortcutShapesDataModule", "init_args": {"image_size": 32}},
}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when both ``args`` and a command line (here pytest's) are present."""
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def _example_cli():
    spec = importlib.util.spec_from_file_location("example_cli", ROOT / "examples" / "cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_cli"] = module
    spec.loader.exec_module(module)
    return module.cli


def _yaml_expressible(value: Any) -> bool:
    try:
        return yaml.safe_load(yaml.safe_dump(value)) == (list(value) if isinstance(value, tuple) else value)
    except yaml.YAMLError:
        return False


@pytest.mark.parametrize("name", callbacks.__all__)
def test_every_callback_argument_is_typed_and_yaml_expressible(name):
    from jsonargparse import ArgumentParser

    cls = getattr(callbacks, name)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    for p in params:
        assert p.annotation is not inspect.Parameter.empty, f"{name}({p.name}) has no type hint"
        if p.default is not inspect.Parameter.empty:
            assert _yaml_expressible(p.default), f"{name}({p.name}={p.default!r}) cannot be written in YAML"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "cb", fail_untyped=True)
    dests = {action.dest for action in parser._actions}
    skipped = [p.name for p in params if not any(d == f"cb.{p.name}" or d.startswith(f"cb.{p.name}.") for d in dests)]
    assert not skipped, f"jsonargparse skipped {name} arguments {skipped}"


@pytest.mark.parametrize("name", callbacks.__all__)
def test_every_callback_builds_from_yaml(name, tmp_path):
    config = dict(BASE)
    config["trainer"] = {
        "callbacks": [{"class_path": f"lightning_explain.callbacks.{name}", "init_args": MINIMAL_ARGS.get(name, {})}],
        "default_root_dir": str(tmp_path),
        "logger": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = _example_cli()(["--config", str(path)], run=False)
    built = [cb for cb in cli.trainer.callbacks if isinstance(cb, getattr(callbacks, name))]
    assert len(built) == 1


def test_example_config_builds_the_configured_callbacks(tmp_path):
    cli = _example_cli()(["--config", str(CONFIG), "--trainer.default_root_dir", str(tmp_path)], run=False)
    explain = next(cb for cb in cli.trainer.callbacks if isinstance(cb, callbacks.ExplainCallback))
    alert = next(cb for cb in cli.trainer.callbacks if isinstance(cb, callbacks.FocusAlert))
    assert explain.layer == "features.9" and explain.methods == ("gradcam", "saliency", "activations")
    assert explain.mask_keys == {"object": 2, "cue": 3} and explain.class_names == ["square", "disc", "triangle"]
    assert explain._schedule["saliency"] == (2, None)
    assert (alert.monitor, alert.threshold, alert.patience) == ("explain/gradcam/focus/lift", 0.15, 2)


def test_example_config_trains_with_lightning_cli(tmp_path):
    overrides = {
        "--trainer.max_epochs": "2",
        "--trainer.default_root_dir": str(tmp_path),
        "--trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
        "--trainer.enable_progress_bar": "false",
        "--trainer.enable_model_summary": "false",
        "--data.init_args.train_size": "64",
        "--data.init_args.val_size": "32",
        "--data.init_args.image_size": "32",
        "--data.init_args.cue_size": "8",
    }
    args = ["fit", "--config", str(CONFIG)] + [x for kv in overrides.items() for x in kv]
    cli = _example_cli()(args)
    log_dir = Path(cli.trainer.logger.log_dir)
    assert log_dir.parent == tmp_path / "runs" / "shortcut"
    images = read_event_images(log_dir)
    assert len(images["explain/gradcam"]) == 2 and len(images["explain/activations"]) == 2
    assert len(images["explain/saliency"]) == 1  # method_options: every 2 epochs
    metrics = cli.trainer.callback_metrics
    assert "explain/gradcam/focus/lift" in metrics and "explain/gradcam/focus/energy_in_cue" in metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    alert = acc.Scalars("focus_alert/explain/gradcam/focus/lift/bad_epochs")  # FocusAlert ran every epoch
    assert len(alert) == 2
    assert (log_dir / "config.yaml").is_file()  # LightningCLI saved the resolved config beside the logs
