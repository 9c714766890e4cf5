"""Cost of the focus and drift numbers per explained epoch, as a ratio of the probe pass they come from.

For a probe of N images, ExplainCallback computes, per scored method (Grad-CAM and saliency), every focus
metric and every drift metric against the previous epoch, the first epoch and the chance pairing. This script
times exactly that (``MapMetrics.update`` twice, with object and cue masks, after a warm-up epoch so that the
drift history exists) and divides it by the time of the probe pass itself (``explain`` with the three maps)
measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (``--size 224 --model resnet18`` or the demo's CNN).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from lightning_explain.epoch.history import MapMetrics
from lightning_explain.functional import explain


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 224])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    print(f"probe {args.probe} images, resnet18 (random weights), CPU, {torch.get_num_threads()} threads")
    print(f"{'size':>6}{'probe pass ms':>15}{'metrics ms':>12}{'ratio':>8}")
    for size in args.sizes:
        x = torch.rand(args.probe, 3, size, size)
        masks = {"object": torch.rand(args.probe, size, size) > 0.7, "cue": torch.rand(args.probe, size, size) > 0.95}
        out = explain(model, x, "layer4")
        metrics = MapMetrics()
        for method in ("gradcam", "saliency"):
            metrics.update(method, out[method], masks)  # epoch 0: the history exists from now on

        def epoch(metrics: MapMetrics = metrics, out: dict = out, masks: dict = masks) -> None:
            for method in ("gradcam", "saliency"):
                metrics.update(method, out[method], masks)

        pass_ms = _median_ms(lambda x=x: explain(model, x, "layer4"), args.repeats)
        metric_ms = _median_ms(epoch, args.repeats)
        print(f"{size:>6}{pass_ms:>15.1f}{metric_ms:>12.1f}{metric_ms / pass_ms:>7.2f}x")


if __name__ == "__main__":
    main()
