"""Attention maps and rollout of a 16-image probe, as a ratio of one plain forward of the same batch.

For a small ViT (torchvision ``VisionTransformer``, 8 px patches on 64 px images, 6 layers, dim 192) and
``vit_b_16`` (random weights, 224 px), on the CPU, it times in the same run, interleaved round-robin:

- the baseline: one ``torch.no_grad()`` forward of the probe;
- ``explain(..., methods=("attention",))``: the class-token attention of the last layer, every head and every
  layer (one forward with the attention weights captured);
- ``explain(..., methods=("rollout",))``: attention rollout over all layers;
- ``explain(..., methods=("attention", "rollout", "gradcam"))``: the three from the same single pass;
- ``explain(..., methods=("grad_rollout",))``: gradient-weighted rollout (forward + one ``autograd.grad``).

and prints median times, the ratio to the baseline, and the peak extra RSS of one call of each, measured in a
fresh subprocess (Linux ``VmHWM`` after the call minus ``VmRSS`` before, with the high-water mark reset
through ``/proc/self/clear_refs``).

Run: ``.venv/bin/python benchmarks/bench_attention.py`` (``--models small``, ``--repeats 3``, ``--no-memory``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from _memory import child_peak_mib, print_peak_extra_mib
from torch import nn

from lightning_explain.functional import explain

VARIANTS: dict[str, tuple[str, ...] | None] = {
    "plain forward (baseline)": None,
    "attention (last layer, heads, layers)": ("attention",),
    "rollout": ("rollout",),
    "attention + rollout + gradcam, one pass": ("attention", "rollout", "gradcam"),
    "grad_rollout": ("grad_rollout",),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "small":
        model = torchvision.models.VisionTransformer(64, 8, 6, 3, 192, 384, num_classes=10)
        size = 64
    else:
        model = torchvision.models.vit_b_16(weights=None)
        size = 224
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model.eval(), torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(0))


def call(model: nn.Module, x: torch.Tensor, variant: str) -> Callable[[], object]:
    methods = VARIANTS[variant]
    if methods is None:

        def forward() -> object:
            with torch.no_grad():
                return model(x)

        return forward
    return lambda: explain(model, x, None, methods)


def child(model_name: str, variant: str) -> None:
    model, x = build(model_name)
    print_peak_extra_mib(call(model, x, variant))


def peak_mib(model_name: str, variant: str) -> str:
    value = child_peak_mib([__file__, "--child", model_name, variant], f"{model_name}:{variant}")
    return "n/a" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["small", "vit_b_16"], choices=["small", "vit_b_16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"probe 16 images, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for model_name in args.models:
        model, x = build(model_name)
        fns = {variant: call(model, x, variant) for variant in VARIANTS}
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant, fn in fns.items():  # interleaved: machine noise hits every variant alike
                start = time.perf_counter()
                fn()
                times[variant].append(time.perf_counter() - start)
        base = statistics.median(times["plain forward (baseline)"])
        for variant in VARIANTS:
            median = statistics.median(times[variant])
            memory = "n/a" if args.no_memory else peak_mib(model_name, variant)
            rows.append((model_name, variant, median * 1000, median / base, memory))
    print("\n| model | variant | median ms | ratio vs forward | peak extra MiB |\n|---|---|---:|---:|---:|")
    for model_name, variant, ms, ratio, memory in rows:
        print(f"| {model_name} | {variant} | {ms:.0f} | {ratio:.2f}x | {memory} |")


if __name__ == "__main__":
    main()
