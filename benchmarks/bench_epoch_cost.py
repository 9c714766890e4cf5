"""Benchmark: what the default ExplainCallback costs a whole fit, where an explained epoch's time goes, and the drift
numbers against the previous implementation.

1. **Whole fit** (the reference run): torchvision ``resnet18`` (random weights, 10 classes), 512 training and 128
   validation images of 64x64 px (seeded ``torch.rand``), batch 32, 3 epochs, CPU, ``--threads`` threads,
   ``TensorBoardLogger``; plain fit vs the same fit with ``ExplainCallback(layer="net.layer3")`` at its
   defaults (16 probe images, Grad-CAM + saliency + activations, focus and drift numbers, three grids). The two
   fits alternate (the order flips every pair) and the script prints each pair's ratio and their median. Goal:
   at most 1.10x.
2. **Per-stage breakdown** of one explained epoch, from the callback's ``stage_seconds`` (on the training thread:
   maps, numbers, rendering, handing the grids to the writer) and the background writer's time (PNG encoding and
   the TensorBoard write, off the training thread), for the reference run and for a 224 px, 16-image probe.
3. **Drift numbers**: ``drift_report`` of 16 maps against the previous and the first epoch and the chance pairing,
   today and as before this change (every metric called per pair, the log-domain Sinkhorn EMD and the scatter-based
   ranks, kept below as the baseline), the EMD alone both ways, and each EMD's largest error against scipy's exact
   linear program on those maps' 8x8 grids.

Run::

    .venv/bin/python benchmarks/bench_epoch_cost.py                 # 3 pairs
    .venv/bin/python benchmarks/bench_epoch_cost.py --pairs 5 --markdown
    .venv/bin/python benchmarks/bench_epoch_cost.py --fast-crc       # with LIGHTNING_EXPLAIN_FAST_CRC=1
    .venv/bin/python benchmarks/bench_epoch_cost.py --only fit --trust   # with ExplainCallback(trust=...) on

No timing is asserted anywhere; machines are noisy: read the pairs, not one number.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_explain.functional.metrics as metrics
import lightning_explain.functional.transport as transport
from lightning_explain import ExplainCallback

GOAL = 1.10
warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torchvision.models.resnet18(weights=None, num_classes=10)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, _: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def data(n: int, size: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


#: ``ExplainCallback(trust=...)`` in the explained fits (``--trust``: every epoch, to report its cost; default off).
TRUST: dict[str, Any] | bool = False


def fit(explained: bool, *, size: int = 64, n_train: int = 512, n_val: int = 128, epochs: int = 3) -> dict[str, Any]:
    train = DataLoader(data(n_train, size, 1), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(data(n_val, size, 2), batch_size=32)
    callback = ExplainCallback(layer="net.layer3", trust=TRUST) if explained else None
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=TensorBoardLogger(root, name="bench"),
            callbacks=[callback] if callback is not None else [],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(Net(), train, val)
        seconds = time.perf_counter() - start
    stages = dict(callback.stage_seconds) if callback is not None else {}
    if callback is not None:
        writer = callback._sink.writer  # the run's background writer (closed at teardown, kept for its seconds)
        seconds_background = writer.seconds if writer is not None else 0.0
        stages["PNG encoding + TensorBoard write (background thread)"] = seconds_background / epochs
    return {"seconds": seconds, "stages": stages}


def whole_fit(pairs: int, markdown: bool) -> None:
    print(f"1. whole fit: resnet18, 512 + 128 images of 64 px, batch 32, 3 epochs, {torch.get_num_threads()} threads")
    fit(True, n_train=64, n_val=32, epochs=1)  # warm-up: imports, first-call caches
    ratios, plain_s, explained_s, stages = [], [], [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        result = {flag: fit(flag) for flag in order}
        plain_s.append(result[False]["seconds"])
        explained_s.append(result[True]["seconds"])
        stages.append(result[True]["stages"])
        ratios.append(explained_s[-1] / plain_s[-1])
        plain, explained = plain_s[-1], explained_s[-1]
        print(f"  pair {pair + 1}: plain {plain:.1f} s, with the callback {explained:.1f} s, {ratios[-1]:.3f}x")
    median = statistics.median(ratios)
    print(f"  median ratio {median:.3f}x (goal <= {GOAL:.2f}x: {'met' if median <= GOAL else 'NOT met'})")
    print_stages("reference run (16 probe images of 64 px), per explained epoch", stages, markdown)


def print_stages(title: str, runs: list[dict[str, float]], markdown: bool) -> None:
    names = list(runs[0])
    print(f"\n2. stages, {title} (median of {len(runs)} runs):")
    rows = [(name, statistics.median(run[name] for run in runs)) for name in names]
    on_thread = sum(v for k, v in rows if "background" not in k)
    for name, value in rows:
        print(f"  {name:<58} {value * 1000:8.1f} ms")
    print(f"  {'total on the training thread':<58} {on_thread * 1000:8.1f} ms")
    if markdown:
        print("\n| stage | ms per explained epoch |\n|---|---:|")
        for name, value in rows:
            print(f"| {name} | {value * 1000:.0f} |")
        print(f"| **total on the training thread** | **{on_thread * 1000:.0f}** |")


def large_probe(markdown: bool) -> None:
    runs = []
    for _ in range(2):
        result = fit(True, size=224, n_train=32, n_val=16, epochs=2)
        runs.append(result["stages"])
    print_stages("a 224 px, 16-image probe", runs, markdown)


# -------------------------------------------------------------------------------------------- drift numbers


def previous_emd(maps_a: Tensor, maps_b: Tensor, grid: int = 8, epsilon: float = 3e-3, iterations: int = 15) -> Tensor:
    """The EMD before this change: log-domain Sinkhorn, first marginal fixed (kept as the benchmark's baseline)."""
    p, valid_p = transport.distributions(maps_a)
    q, valid_q = transport.distributions(maps_b)
    p, q = transport._pool_to_grid(p, grid), transport._pool_to_grid(q, grid)
    height, width = p.shape[-2:]
    pts = transport.grid_points(height, width, p.device)
    cost = torch.cdist(pts, pts).float()
    a, b = p.flatten(1).float(), q.flatten(1).float()
    log_a, log_b = torch.log(a.clamp_min(1e-38)), torch.log(b.clamp_min(1e-38))
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    eps = float(cost.max().item())
    while True:
        eps = max(eps / 2, epsilon)
        for _ in range(iterations):
            f = -eps * torch.logsumexp((g[:, None, :] - cost[None]) / eps + log_b[:, None, :], dim=2)
            g = -eps * torch.logsumexp((f[:, :, None] - cost[None]) / eps + log_a[:, :, None], dim=1)
        if eps <= epsilon:
            break
    plan = torch.exp((f[:, :, None] + g[:, None, :] - cost[None]) / eps + log_a[:, :, None] + log_b[:, None, :])
    plan = plan * (a / plan.sum(dim=2).clamp_min(1e-38))[:, :, None]
    value = (plan * cost[None]).sum(dim=(1, 2)).float()
    return torch.where(valid_p & valid_q, value, torch.full_like(value, float("nan")))


def cam_like_maps(n: int, seed: int) -> Tensor:
    """Upsampled ReLU'd random 8x8 layer maps: what Grad-CAM gives at 64 px."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 8, 8, generator=g).relu() ** 2
    return F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]


def exact_error(emd_fn: Any, a: Tensor, b: Tensor) -> float:
    from scipy.stats import wasserstein_distance_nd

    pooled = [F.adaptive_avg_pool2d(m[:, None] / m.sum(dim=(1, 2), keepdim=True)[:, None], 8)[:, 0] for m in (a, b)]
    pts = transport.grid_points(8, 8, torch.device("cpu")).numpy()
    ours = emd_fn(a, b).double().numpy()
    worst = 0.0
    for i in range(a.shape[0]):
        pa, pb = (m[i].double().flatten().numpy() for m in pooled)
        worst = max(worst, abs(ours[i] - wasserstein_distance_nd(pts, pts, pa / pa.sum(), pb / pb.sum())))
    return worst


def previous_ranks(values: Tensor) -> Tensor:
    """The average ranks before this change (scatter_reduce over tie groups), kept as the baseline."""
    batch, n = values.shape
    ordered, order = values.sort(dim=1)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1 + torch.arange(batch)[:, None] * n
    position = torch.arange(1, n + 1, dtype=torch.float64).expand(batch, n).reshape(-1)
    flat = group.reshape(-1)
    first = torch.full((batch * n,), float(n + 1), dtype=torch.float64).scatter_reduce(0, flat, position, "amin")
    last = torch.zeros(batch * n, dtype=torch.float64).scatter_reduce(0, flat, position, "amax")
    return torch.empty(batch, n, dtype=torch.float64).scatter_(1, order, ((first + last) / 2)[flat].view(batch, n))


def previous_spearman(a: Tensor, b: Tensor) -> Tensor:
    ra, rb = previous_ranks(a.flatten(1)), previous_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    return ((ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-300)).float()


def previous_drift_report(current: Tensor, previous: Tensor, first: Tensor) -> dict[str, Tensor]:
    """The drift numbers before this change: every metric called once per pair, the previous EMD and ranks."""
    fns = {**metrics.DRIFT_METRICS, "emd": previous_emd, "spearman": previous_spearman}
    pairs = {"prev": previous, "first": first, "chance": current.roll(1, dims=0)}
    return {f"{name}_{key}": fn(current, other) for name, fn in fns.items() for key, other in pairs.items()}


def drift_numbers(repeats: int) -> None:
    current, previous, first = (cam_like_maps(16, seed) for seed in range(3))
    left, right = torch.cat([current] * 3), torch.cat([previous, first, current.roll(1, dims=0)])
    variants = {
        "drift numbers, before (per pair; previous EMD and ranks)": lambda: previous_drift_report(
            current, previous, first
        ),
        "drift numbers, today (metrics.drift_report)": lambda: metrics.drift_report(current, previous, first),
        "EMD alone, before (48 pairs in 3 calls)": lambda: [previous_emd(current, m) for m in right.split(16)],
        "EMD alone, today (48 pairs in one call)": lambda: metrics.emd(left, right),
    }
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(repeats):
        for label, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    median = {label: statistics.median(values) for label, values in times.items()}
    print("\n3. drift of 16 maps of 64 px against the previous and first epoch and the chance pairing, per method:")
    for label, value in median.items():
        print(f"  {label:<58} {value * 1000:8.1f} ms")
    labels = list(median)
    print(
        f"  drift numbers {median[labels[0]] / median[labels[1]]:.1f}x cheaper, EMD "
        f"{median[labels[2]] / median[labels[3]]:.1f}x (goal >= 10x)"
    )
    print(
        f"  max error vs exact LP: before {exact_error(previous_emd, current, previous):.4f}, "
        f"today {exact_error(metrics.emd, current, previous):.4f} image sides"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only", choices=("fit", "large", "drift"), default=None)
    parser.add_argument(
        "--fast-crc", action="store_true", help="set LIGHTNING_EXPLAIN_FAST_CRC=1 (TensorBoard's checksum, vectorised)"
    )
    parser.add_argument("--trust", action="store_true", help="explained fits with trust={'every_n_epochs': 1}")
    args = parser.parse_args()
    if args.trust:
        global TRUST
        TRUST = {"every_n_epochs": 1}
    if args.fast_crc:
        os.environ["LIGHTNING_EXPLAIN_FAST_CRC"] = "1"
    print(f"TensorBoard checksum: {'vectorised (LIGHTNING_EXPLAIN_FAST_CRC=1)' if args.fast_crc else 'its own'}")
    torch.set_num_threads(args.threads)
    if args.only in (None, "drift"):
        drift_numbers(repeats=9)
    if args.only in (None, "fit"):
        whole_fit(args.pairs, args.markdown)
    if args.only in (None, "large"):
        large_probe(args.markdown)
    np.set_printoptions()


if __name__ == "__main__":
    nn.Module  # noqa: B018 (torch.nn imported for type names in docstrings)
    main()
