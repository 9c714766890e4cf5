"""Two processes on the CPU (gloo): DDP, ddp_spawn and a sharded strategy (FSDP2), never a hang.

Under DDP the probe passes run on rank zero alone; under FSDP2 (``ModelParallelStrategy`` + ``fully_shard``) every
rank joins them, and the worker checks on every rank that each pass left gradients, optimizer state, hooks, FSDP2's
own state and the RNG states untouched, and that the weights equal those of the same run without the views.
Each two-process run is started once per module (a fixture) and read by several tests.

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
from conftest import read_event_images, read_event_scalars
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

from lightning_explain.epoch.distributed import check_sharded, sharded_strategy

ROOT = Path(__file__).resolve().parents[2]
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


def _assert_rank_zero_only(out: Path, tags: set[str] = TAGS) -> None:
    ranks = _ranks(out)
    assert sorted(ranks) == [0, 1] and all(r["world_size"] == 2 and r["epochs"] == 2 for r in ranks.values())
    # Rank 0: at train start the default layer's two passes (shapes, then gradients) and one dry run, then one
    # probe pass per validation epoch; rank 1: nothing at all.
    assert ranks[0]["probe_forward_calls"] == 5
    assert ranks[1]["probe_forward_calls"] == 0
    log_dir = out / "tb" / "version_0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes
    images = read_event_images(log_dir)
    assert set(images) == tags
    # 24 training samples, batch 4, 2 ranks: 3 steps per epoch; exactly one image per tag per epoch.
    assert all([step for step, _ in events] == [2, 5] for events in images.values())


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    result = _run_worker(out, "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_ddp_computes_and_logs_on_rank_zero_only(ddp_run):
    _assert_rank_zero_only(ddp_run, TAGS | {"explain/errors/probe", "explain/errors/most_confused"})


@pytest.mark.slow
def test_ddp_most_confused_examples_are_the_top_k_over_every_ranks_validation_data(ddp_run):
    ranks = _ranks(ddp_run)
    for epoch in range(2):
        # Each rank's own top 4 (positions in its shard); Lightning's DistributedSampler gives rank r the dataset
        # indices r, r + 2, r + 4, ... of the 16 validation samples.
        local = [(pos * 2 + r, conf) for r in (0, 1) for pos, conf in ranks[r]["local"][epoch]]
        expected = sorted(local, key=lambda pair: -pair[1])[:4]
        gathered = [tuple(pair) for pair in ranks[0]["gathered"][epoch]]
        assert gathered == expected
        assert ranks[1]["gathered"][epoch] == ranks[0]["gathered"][epoch]  # every rank holds the same result
        assert {i % 2 for i, _ in gathered} == {0, 1}  # here both ranks' shards contribute


@pytest.mark.slow
def test_ddp_early_stopping_and_model_checkpoint_monitor_a_focus_number_on_every_rank(tmp_path):
    # Rank zero computes the number, broadcasts it, and every rank logs it: with rank_zero_only=True, EarlyStopping
    # on rank 1 raised "Early stopping conditioned on metric ... which is not available" and the run died.
    from distributed_worker import MONITORED

    result = _run_worker(tmp_path, "ddp_monitor")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {r: json.loads((tmp_path / f"monitor{r}.json").read_text()) for r in (0, 1)}
    logged = [value for _, value in read_event_scalars(tmp_path / "tb" / "version_0")[MONITORED]]
    assert len(logged) == 2  # EarlyStopping stopped both ranks after min_epochs=2 of max_epochs=3
    for rank in (0, 1):
        assert seen[rank]["epochs"] == 2
        assert seen[rank]["last_value"] == pytest.approx(logged[-1])  # rank 1 holds rank zero's number
        assert seen[rank]["checkpoint_best"] == pytest.approx(max(logged))
    assert seen[0]["early_stopping_best"] == seen[1]["early_stopping_best"]
    assert Path(seen[0]["checkpoint_path"]).name == "best.ckpt" and Path(seen[0]["checkpoint_path"]).is_file()


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


@pytest.fixture(scope="module")
def fsdp2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    # FSDP2 (fully_shard) through Lightning's ModelParallelStrategy runs on CPU + gloo: the views' passes, then the
    # same fit without the views, in the same two processes.
    out = tmp_path_factory.mktemp("fsdp2")
    result = _run_worker(out, "fsdp2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_fsdp2_every_rank_joins_the_passes_and_rank_zero_alone_logs(fsdp2_run):
    out, result = fsdp2_run
    assert "is disabled for this run" not in result.stderr
    ranks = _ranks(out)
    assert sorted(ranks) == [0, 1] and all(r["epochs"] == 2 for r in ranks.values())
    calls = [ranks[r]["probe_forward_calls"] for r in (0, 1)]
    assert calls[0] == calls[1] > 5  # the same passes on both ranks (more views than under DDP)
    # Every rank explains the same probe (rank zero's), in every view: a digest of each view's probe, per rank.
    probed = {"ExplainCallback", "ErrorAttribution", "FeatureMaps", "FeatureInversion", "TCAVCallback"}
    assert set(ranks[0]["probes"]) >= probed and ranks[0]["probes"] == ranks[1]["probes"]
    log_dir = out / "tb" / "version_0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes
    images = read_event_images(log_dir)
    views = {"errors/probe", "errors/most_confused", "feature_maps/features.3", "inversion/features.3"}
    assert set(images) >= TAGS | {f"explain/{v}" for v in views} | {"explain/filters/features.0"}
    assert all([step for step, _ in images[tag]] == [2, 5] for tag in TAGS)
    scalars = read_event_scalars(log_dir)
    assert "explain/tcav/dim/cav_accuracy" in scalars and "explain/errors/max_wrong_confidence" in scalars


@pytest.mark.slow
def test_fsdp2_passes_leave_grads_optimizer_hooks_fsdp_state_and_rng_unchanged_on_every_rank(fsdp2_run):
    ranks = _ranks(fsdp2_run[0])
    for rank in (0, 1):
        # One check at train start and one per validation epoch; each lists the parts a pass changed (see
        # distributed_worker.Guard: sentinel gradients on every sharded parameter, optimizer state, every module's
        # hooks, FSDP2's training/sharded state and flags, the parameters' identity, the RNG states).
        assert ranks[rank]["checks"] == [[], [], []]


@pytest.mark.slow
def test_fsdp2_weights_are_bit_identical_with_and_without_the_views(fsdp2_run):
    out = fsdp2_run[0]
    views, plain = _ranks(out), _ranks(out / "plain")
    for rank in (0, 1):
        assert views[rank]["weights"] == plain[rank]["weights"]  # this rank's shards, parameters and buffers
    assert views[0]["weights"] != views[1]["weights"]  # the shards differ: each rank checks its own


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

    # Which ones the views skip: FSDP v1 and DeepSpeed-3 (Lightning refuses them on the CPU, so never run here), not
    # FSDP2 (every rank joins). A trainer stand-in: Lightning builds no Trainer with FSDPStrategy on the CPU.
    class TrainerOf:
        def __init__(self, strategy: object) -> None:
            self.strategy, self.is_global_zero = strategy, True

    with pytest.warns(UserWarning, match="ViewX is disabled for this run: the FSDPStrategy strategy shards") as rec:
        assert check_sharded(TrainerOf(FSDPStrategy()), "ViewX") == "FSDPStrategy"
    assert "use FSDP2 (ModelParallelStrategy with fully_shard in configure_model)" in str(rec[0].message)
    with pytest.warns(UserWarning, match="DeepSpeedStrategy \\(ZeRO stage 3\\) strategy shards"):
        assert check_sharded(TrainerOf(DeepSpeedStrategy(3)), "ViewX") is not None
    assert check_sharded(TrainerOf(ModelParallelStrategy()), "ViewX") is None


@pytest.mark.slow
def test_a_failure_on_one_rank_inside_a_joined_pass_stops_every_rank_with_its_message(fsdp2_run):
    # Under FSDP2 every rank runs the view inside `together`: a failure on any rank (here rank 1 only) becomes an
    # error on every rank; `broadcast_from_zero` (the probe) sends rank zero's error to the others. Nobody waits.
    out = fsdp2_run[0]
    seen = [json.loads((out / f"agree{r}.json").read_text()) for r in (0, 1)]
    stopped = "RuntimeError: View failed on global rank {}, so every rank stops: {}"
    assert seen[0][0] == stopped.format(1, "ValueError: bad layer on rank 1")
    assert seen[1][0] == "ValueError: bad layer on rank 1"
    assert seen[0][1] == "OSError: probe file missing"
    assert seen[1][1] == stopped.format(0, "OSError: probe file missing")
    assert [seen[0][2], seen[1][2]] == ["0", "10"]  # no failure: each rank's own value; the group still works


def _fault_records(out: Path) -> tuple[dict[int, dict], dict[int, dict], dict[int, list[str]]]:
    fault = out / "fault"
    warned = {r: json.loads((fault / f"warnings{r}.json").read_text()) for r in (0, 1)}
    return _ranks(fault), _ranks(out / "plain"), warned


@pytest.mark.slow
def test_fsdp2_a_view_failing_on_one_rank_is_skipped_on_every_rank_with_the_cause(fsdp2_run):
    # Rank 1 alone runs out of memory in the probe forward of one view and in the autograd.grad backward of another,
    # at epoch 0 (tests/distributed_worker.py, Fault). Both ranks learn it at the next status check and skip both
    # views at that epoch with rank 1's cause; at epoch 1 both views run again on both ranks.
    out, result = fsdp2_run
    ranks, _, warned = _fault_records(out)
    for where in ("forward", "backward"):
        cause = f"on global rank 1: OutOfMemoryError: injected out of memory in the probe {where} on rank 1"
        skipped = f"ExplainCallback: the view failed at epoch 0 (RuntimeError: {cause}; every rank skips this view"
        for rank in (0, 1):
            assert sum(text.startswith(skipped) for text in warned[rank]) == 1, warned[rank]
        # Every rank splits the probe alike afterwards (rank 1's out-of-memory retry halved its chunk size).
        assert ranks[0][f"chunk_{where}"][-1] == ranks[1][f"chunk_{where}"][-1]
        # The figure: how long rank 0 went on after rank 1 raised, until it had left the view (same clock).
        waited = ranks[0][f"done_{where}"][0] - ranks[1][f"fault_{where}"]
        print(f"rank 0 left the view {waited:.3f} s after rank 1's {where} failure")
    # Nothing of the skipped epoch is logged; the next epoch is (Lightning's validation step: 3 steps per epoch).
    images = read_event_images(out / "fault" / "tb" / "version_0")
    assert {tag: [step for step, _ in events] for tag, events in images.items()} == {
        "explain/gradcam": [5],
        "explain/saliency": [5],
        "explain/activations": [5],
        "backward/saliency": [5],
    }
    assert "Timeout" not in result.stderr and "Connection" not in result.stderr


@pytest.mark.slow
def test_fsdp2_training_goes_on_in_step_after_a_one_rank_failure_with_bit_identical_weights(fsdp2_run):
    ranks, plain, _ = _fault_records(fsdp2_run[0])
    for rank in (0, 1):
        assert ranks[rank]["epochs"] == 2
        assert ranks[rank]["weights"] == plain[rank]["weights"]  # as if the views had been off
        # Before and after the views, at train start and at each epoch: the same hooks, FSDP2 state (every unit
        # resharded, idle), gradients, optimizer state and RNG states, on both ranks.
        assert ranks[rank]["checks"] == [[], [], []]


@pytest.mark.slow
def test_fsdp2_a_one_rank_failure_under_strict_stops_every_rank_with_the_cause(tmp_path):
    result = _run_worker(tmp_path, "fsdp2_strict")
    assert result.returncode != 0
    cause = "OutOfMemoryError: injected out of memory in the probe forward on rank 1"
    assert f"[rank1]: torch.{cause}" in result.stderr, result.stderr[-3000:]
    stopped = f"[rank0]: RuntimeError: ExplainCallback failed on global rank 1, so every rank stops: {cause}"
    assert stopped in result.stderr, result.stderr[-3000:]
    assert "Timeout" not in result.stderr
    assert _ranks(tmp_path) == {}  # no rank went on to the end of fit
