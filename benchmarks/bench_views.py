"""The cost of the extra views (errors, filters, feature maps, TCAV, feature inversion), as a ratio of one forward.

torchvision ``resnet18`` (random weights, CPU), 224 px images. Baseline: one plain ``torch.no_grad()`` forward of
a 16-image batch, timed in the same run, interleaved round-robin with the views:

- ``FilterGrid``: ``filter_grid(conv1.weight)`` (64 filters of 7x7, one ``uint8`` grid; no forward);
- ``FeatureMaps``: ``feature_maps`` of ``conv1`` and ``layer4`` for 2 images, 16 channels, plus the two grids;
- ``ErrorAttribution``: the predicted- and true-class Grad-CAM of 8 wrong images (one pass over 16 = 8 x 2);
  and the per-batch bookkeeping of the most-confused search (softmax, top-k, keep k images on the CPU) for a
  batch of 64 with 1000 classes;
- ``TCAVCallback``: one ``tcav`` run at ``layer3``: 1 concept of 32 images, 6 random sets of 32 (5 runs), 2
  classes of 16 images;
- ``FeatureInversion``: ``invert_features`` of 1 image at ``layer2``, per step (20 steps timed).

Run: ``.venv/bin/python benchmarks/bench_views.py`` (``--repeats 3``; ``--size 64`` for a quicker run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from lightning_explain.epoch.history import ConfusedExamples
from lightning_explain.functional import explain, invert_features, tcav
from lightning_explain.functional.feature_maps import feature_maps
from lightning_explain.output.render_views import feature_map_grid, filter_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    s = args.size
    batch = torch.rand(16, 3, s, s)
    g = torch.Generator().manual_seed(1)
    concept = torch.rand(32, 3, s, s, generator=g)
    randoms = [torch.rand(32, 3, s, s, generator=g) for _ in range(6)]
    classes = {0: torch.rand(16, 3, s, s, generator=g), 1: torch.rand(16, 3, s, s, generator=g)}
    logits = torch.randn(64, 1000)
    labels = torch.randint(0, 1000, (64,))
    images64 = torch.rand(64, 3, s, s)
    inversion_steps = 20

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    def filters() -> None:
        filter_grid(model.conv1.weight, cell_size=32)

    def fmaps() -> None:
        maps = feature_maps(model, batch[:2], ["conv1", "layer4"], 16)
        for m in maps.values():
            feature_map_grid(batch[:2], m, cell_size=64)

    def errors() -> None:
        explain(model, torch.cat([batch[:8], batch[:8]]), "layer4", ("gradcam",), torch.arange(16) % 10)

    def confused_bookkeeping() -> None:
        new = ConfusedExamples.from_batch(logits, labels, images64, 0, 8)
        ConfusedExamples.empty().merge(new, 8)

    def concept_sensitivity() -> None:
        tcav(model, "layer3", classes, {"c": concept}, randoms, steps=300)

    def inversion() -> None:
        invert_features(model, "layer2", batch[:1], steps=inversion_steps, progress=False)

    variants: dict[str, tuple[Callable[[], None], int]] = {
        "plain forward of 16 images (baseline)": (forward, 1),
        "FilterGrid: conv1 grid": (filters, 1),
        "FeatureMaps: conv1 + layer4, 2 images": (fmaps, 1),
        "ErrorAttribution: pred + true Grad-CAM, 8 images": (errors, 1),
        "ErrorAttribution: most-confused bookkeeping per val batch": (confused_bookkeeping, 1),
        "TCAVCallback: one run (1 concept, 5 random runs, 2 classes)": (concept_sensitivity, 1),
        "FeatureInversion: per step, layer2, 1 image": (inversion, inversion_steps),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn, _ in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, (fn, per) in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000 / per)
    base = statistics.median(times["plain forward of 16 images (baseline)"])
    print(f"resnet18, {s} px, CPU, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"| {'view':<62} | {'median ms':>10} | {'x forward':>9} |")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"| {name:<62} | {ms:>10.1f} | {ms / base:>8.2f}x |")


if __name__ == "__main__":
    main()
