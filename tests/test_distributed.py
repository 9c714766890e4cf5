"""Two processes on the CPU (gloo): DDP, ddp_spawn and a sharded strategy (FSDP2), never a hang.

``strategy="ddp"`` re-launches ``sys.argv`` for rank 1, so those runs go through tests/distributed_worker.py in a
subprocess with a timeout (a hang fails the test instead of hanging CI); ``ddp_spawn`` runs in-process under a
watchdog. Evidence comes from the real event files and from one JSON per rank written by the worker: the
forward calls of the LightningModule that each rank made inside ExplainCallback's hooks.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_event_images
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

from lightning_explain.distributed import sharded_strategy

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed_worker.py"
TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}
TIMEOUT = 240  # seconds; the runs take ~20-30 s on 2 shared cores


def _run_worker(out: Path, strategy: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        return subprocess.run(
            [sys.executable, str(WORKER), str(out), strategy],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the {strategy} run hung for {TIMEOUT} s: {err.stderr!r}")


def _ranks(out: Path) -> dict[int, dict]:
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in out.glob("rank*.json")}


def _assert_rank_zero_only(out: Path) -> None:
    ranks = _ranks(out)
    assert sorted(ranks) == [0, 1] and all(r["world_size"] == 2 and r["epochs"] == 2 for r in ranks.values())
    # Rank 0: at train start the default layer's two passes (shapes, then gradients) and one dry run, then one
    # probe pass per validation epoch; rank 1: nothing at all.
    assert ranks[0]["probe_forward_calls"] == 5
    assert ranks[1]["probe_forward_calls"] == 0
    log_dir = out / "tb" / "version_0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes
    images = read_event_images(log_dir)
    assert set(images) == TAGS
    # 24 training samples, batch 4, 2 ranks: 3 steps per epoch; exactly one image per tag per epoch.
    assert all([step for step, _ in events] == [3, 6] for events in images.values())


@pytest.mark.slow
def test_ddp_computes_and_logs_on_rank_zero_only(tmp_path):
    result = _run_worker(tmp_path, "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_rank_zero_only(tmp_path)


@pytest.mark.slow
def test_a_setup_error_on_rank_zero_stops_every_rank_with_its_message(tmp_path):
    # targets=7 for a 3-class model: only rank 0 runs the dry run, so only rank 0 can notice.
    result = _run_worker(tmp_path, "ddp_bad")
    assert result.returncode != 0
    text = "target class indices must lie in [0, 2] for a model with 3 outputs; got [7, 7]."
    assert f"[rank0]: ValueError: {text}" in result.stderr
    stopped = "[rank1]: RuntimeError: ExplainCallback failed at setup on global rank 0, so every rank stops: "
    assert f"{stopped}ValueError: {text}" in result.stderr
    assert "Connection closed by peer" not in result.stderr  # rank 1 did not go on into training alone
    assert _ranks(tmp_path) == {}  # no rank reached the end of fit


@pytest.mark.slow
def test_ddp_spawn_in_process(tmp_path):
    from distributed_worker import build

    trainer, model, train, val = build(tmp_path, "ddp_spawn")
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang kills the test run instead of CI's clock
    try:
        trainer.fit(model, train, val)
    finally:
        faulthandler.cancel_dump_traceback_later()
    _assert_rank_zero_only(tmp_path)


@pytest.mark.slow
def test_sharded_strategy_skips_with_a_warning_and_never_hangs(tmp_path):
    # FSDP2 (fully_shard) through Lightning's ModelParallelStrategy runs on CPU + gloo. Without the skip the
    # rank-0 dry run waits in an all_gather for rank 1 until the process-group timeout.
    result = _run_worker(tmp_path, "fsdp2")
    assert result.returncode == 0, result.stderr[-3000:]
    for owner in ("ExplainCallback", "ErrorAttribution", "FeatureMaps", "FilterGrid", "FeatureInversion"):
        assert f"{owner} is disabled for this run: the ModelParallelStrategy strategy shards" in result.stderr
    assert "strategy='ddp'" in result.stderr
    ranks = _ranks(tmp_path)
    assert [ranks[r]["probe_forward_calls"] for r in (0, 1)] == [0, 0]
    assert all(r["epochs"] == 2 for r in ranks.values())  # training itself ran to the end
    assert read_event_images(tmp_path / "tb" / "version_0") == {}


def test_sharded_strategy_detection_by_class_name():
    class DeepSpeedStrategy:  # a stand-in: DeepSpeed is not installed; detection is by name and config only
        def __init__(self, stage: int) -> None:
            self.config = {"zero_optimization": {"stage": stage}}

    class MyFSDP(FSDPStrategy):
        pass

    assert sharded_strategy(FSDPStrategy()) == "FSDPStrategy"
    assert sharded_strategy(MyFSDP()) == "MyFSDP"
    assert sharded_strategy(ModelParallelStrategy()) == "ModelParallelStrategy"
    assert sharded_strategy(DeepSpeedStrategy(3)) == "DeepSpeedStrategy (ZeRO stage 3)"
    assert sharded_strategy(DeepSpeedStrategy(2)) is None
    assert sharded_strategy(DDPStrategy()) is None
