"""End to end on the benchmark's quick setting: FocusAlert fires on a background-shortcut run and not on a clean one,
given the object masks or only the boxes of the probe images (benchmarks/bench_shortcut_detection.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_module

require_module("skimage")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_shortcut_detection.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_shortcut_detection", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_alert_fires_on_the_shortcut_run_and_not_on_the_clean_one_with_masks_and_with_boxes(bench: Any) -> None:
    shortcut = bench.run("cnn", 0, bench.SHORTCUT_P, methods=("gradcam",), **bench.QUICK)
    clean = bench.run("cnn", 0, bench.CLEAN_P, methods=("gradcam",), **bench.QUICK)
    # The shortcut is real: the model fails the counter split, where the background shows another class.
    assert shortcut["epochs"][-1]["counter_acc"] < 0.4 < clean["epochs"][-1]["counter_acc"]
    for level in ("masks", "boxes"):
        assert shortcut["first_alert"][level] is not None, (level, shortcut["epochs"])
        assert clean["first_alert"][level] is None, (level, clean["epochs"])
    # The alert fired while in-distribution accuracy looked fine.
    fired = shortcut["first_alert"]["masks"]
    assert shortcut["epochs"][fired]["val_acc"] >= 0.6
