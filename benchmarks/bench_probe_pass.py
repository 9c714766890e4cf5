"""Benchmark: the cost of one probe pass that yields Grad-CAM, saliency and channel activations.

What it measures (CPU, torchvision ``resnet18(weights=None)`` in eval mode, a seeded ``torch.rand`` probe of
``--batch`` x 3 x ``--size`` x ``--size``), wall-clock per call of:

* **bare minimum** -- one forward pass and one ``torch.autograd.grad`` of the sum of the predicted-class
  logits with respect to a ``requires_grad`` clone of the input. No map can be computed with less work.
* **ours** -- ``lightning_explain.functional.explain(model, x, "layer4")`` with all three maps.
* **peers** -- the same three maps from the usual tools, the way a user would combine them: a ``no_grad``
  forward with a forward hook on ``layer4`` (predicted classes + top-3 mean-activation channels, bilinear
  upsample), then pytorch-grad-cam ``GradCAM`` with ``ClassifierOutputTarget`` of the predicted classes, then
  captum ``Saliency(abs=True)`` reduced by max over colour channels. Maps are min-max normalised like ours.
* **peers, lean** -- the cheapest fair peer combination (two passes): ``GradCAM`` with ``targets=None`` (it
  picks the predicted classes itself), then captum ``Saliency`` on those classes with the ``layer4`` hook
  riding along on captum's forward pass.

Peer objects (``GradCAM``, ``Saliency``) are built once outside the timed region, as in a user's loop.
``GradCAM`` keeps its hooks on the model for its whole life, so it gets its own ``copy.deepcopy`` of the model
(same weights) and does not slow the other variants down.

Before timing, the script checks that our maps and the peers' agree numerically on the probe (max absolute
difference after min-max normalisation), so the comparison is apples to apples. It then runs warm-up calls
and ``--repeats`` timed rounds; the variants are interleaved round-robin (and the order rotates each round)
so machine noise hits all of them alike. It reports median and min per variant in ms and median / median of
the bare minimum. No timing is asserted.

Memory: unless ``--no-memory``, each variant is run once in a fresh subprocess (after building the model,
probe and peer objects) and the growth of the process's peak resident set size over that one call is
reported as "peak extra RSS": Linux ``/proc/self/status`` ``VmHWM`` after the call minus ``VmRSS`` before it
(the high-water mark is reset first through ``/proc/self/clear_refs``). It is a cold first call, so it
includes one-time caches. ``tracemalloc`` does not see torch's allocations, and ``ru_maxrss`` of a child
started by ``subprocess`` inherits the parent's high-water mark, hence this route; off Linux it prints n/a.

Run::

    .venv/bin/python benchmarks/bench_probe_pass.py               # defaults: 5 repeats, batch 16, 224 px
    .venv/bin/python benchmarks/bench_probe_pass.py --markdown    # plus a README-ready markdown table
    .venv/bin/python benchmarks/bench_probe_pass.py --repeats 9 --threads 2 --batch 8 --size 160

Goal: ours <= 1.15x bare minimum.
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _memory import child_peak_mib, print_peak_extra_mib
from captum.attr import Saliency
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from lightning_explain.functional import ExplainResult, explain

GOAL = 1.15
LAYER = "layer4"
TOP_K = 3
METHODS = ("gradcam", "saliency", "activations")
SEED = 0

# captum sets requires_grad on the probe itself and says so on every call; that is expected here.
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


def _minmax(maps: Tensor) -> Tensor:
    """Per-map min-max scaling of the last two dimensions to [0, 1] (constant maps become zeros)."""
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    return ((flat - low) / span.clamp_min(1e-12)).view_as(maps)


@dataclass
class Setup:
    """Everything the variants share; built once per process."""

    model: nn.Module
    probe: Tensor
    gradcam: GradCAM
    saliency: Saliency


def build_setup(batch: int, size: int) -> Setup:
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    probe = torch.rand(batch, 3, size, size)
    # GradCAM's hooks stay registered on its model until it is released: give it its own copy (same weights).
    cam_model = copy.deepcopy(model)
    gradcam = GradCAM(model=cam_model, target_layers=[cam_model.layer4])  # its constructor calls .eval()
    return Setup(model=model, probe=probe, gradcam=gradcam, saliency=Saliency(model))


def bare_minimum(s: Setup) -> Tensor:
    x = s.probe.clone().requires_grad_(True)
    logits = s.model(x)
    score = logits.gather(1, logits.detach().argmax(dim=1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


def ours(s: Setup) -> ExplainResult:
    return explain(s.model, s.probe, LAYER, methods=METHODS)


def _top_k_activations(act: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    channels = act.mean(dim=(2, 3)).topk(TOP_K, dim=1).indices
    maps = act[torch.arange(act.shape[0])[:, None], channels]
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return _minmax(maps), channels


def _peer_saliency(s: Setup, pred: Tensor) -> Tensor:
    attribution = s.saliency.attribute(s.probe, target=pred, abs=True)
    return _minmax(attribution.amax(dim=1))


def peers(s: Setup) -> dict[str, Any]:
    """Predict with a hooked no-grad forward, then GradCAM and captum Saliency on the predicted classes."""
    seen: list[Tensor] = []
    handle = s.model.layer4.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            pred = s.model(s.probe).argmax(dim=1)
    finally:
        handle.remove()
    activations, channels = _top_k_activations(seen[-1], tuple(s.probe.shape[-2:]))
    cam = s.gradcam(input_tensor=s.probe, targets=[ClassifierOutputTarget(int(c)) for c in pred])
    sal = _peer_saliency(s, pred)
    return {"gradcam": cam, "saliency": sal, "activations": activations, "activation_channels": channels}


def peers_lean(s: Setup) -> dict[str, Any]:
    """Two passes: GradCAM picks the predicted classes itself; the layer4 hook rides on captum's forward."""
    cam = s.gradcam(input_tensor=s.probe, targets=None)
    pred = s.gradcam.outputs.detach().argmax(dim=1)
    seen: list[Tensor] = []
    handle = s.model.layer4.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        sal = _peer_saliency(s, pred)
    finally:
        handle.remove()
    activations, channels = _top_k_activations(seen[-1], tuple(s.probe.shape[-2:]))
    return {"gradcam": cam, "saliency": sal, "activations": activations, "activation_channels": channels}


VARIANTS: dict[str, Callable[[Setup], Any]] = {
    "bare minimum (1 fwd + 1 autograd.grad)": bare_minimum,
    "ours: explain(gradcam, saliency, activations)": ours,
    "peers: hooked fwd + GradCAM + captum Saliency": peers,
    "peers, lean: GradCAM + captum Saliency w/ hook": peers_lean,
}
BASELINE, OURS = list(VARIANTS)[:2]


def check_agreement(s: Setup) -> bool:
    """Print the max abs differences between our maps and the peers'; True if all are small."""
    mine = ours(s)
    theirs = peers(s)
    lean = peers_lean(s)
    cam_peer = torch.from_numpy(np.asarray(theirs["gradcam"]))
    checks = {
        "Grad-CAM   ours vs pytorch-grad-cam": (mine["gradcam"], cam_peer),
        "Grad-CAM   ours vs pytorch-grad-cam (lean)": (mine["gradcam"], torch.from_numpy(lean["gradcam"])),
        "saliency   ours vs captum": (mine["saliency"], theirs["saliency"]),
        "activation ours vs hook + top-3": (mine["activations"], theirs["activations"]),
    }
    print("agreement check (max |difference| after min-max normalisation; maps are in [0, 1]):")
    ok = True
    for label, (a, b) in checks.items():
        diff = (_minmax(a.float()) - _minmax(b.float())).abs().max().item()
        ok &= diff < 1e-3
        print(f"  {label:<44} {diff:.2e}")
    same_channels = torch.equal(mine.activation_channels, theirs["activation_channels"])
    ok &= same_channels
    print(f"  {'activation channels identical':<44} {same_channels}")
    print(f"  {'predicted classes':<44} {mine.targets.tolist()}")
    if not ok:
        print("  WARNING: the maps differ; the timing comparison below is not apples to apples.")
    return ok


def time_variants(s: Setup, warmup: int, repeats: int) -> dict[str, list[float]]:
    names = list(VARIANTS)
    for _ in range(warmup):
        for name in names:
            VARIANTS[name](s)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate so no variant always goes first
        for name in order:
            gc.collect()
            start = time.perf_counter()
            out = VARIANTS[name](s)
            times[name].append((time.perf_counter() - start) * 1e3)
            del out
    return times


def measure_memory(args: argparse.Namespace) -> dict[str, float | None]:
    """Peak RSS growth (MiB) of one call per variant, each in a fresh subprocess."""
    result: dict[str, float | None] = {}
    for index, name in enumerate(VARIANTS):
        cmd = [__file__, "--batch", str(args.batch), "--size", str(args.size), "--_memory-child", str(index)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        result[name] = child_peak_mib(cmd, repr(name))
    return result


def memory_child(index: int, batch: int, size: int) -> None:
    """Print the peak RSS growth in MiB of one call of variant ``index`` (nan where it cannot be measured)."""
    s = build_setup(batch, size)
    fn = list(VARIANTS.values())[index]
    print_peak_extra_mib(lambda: fn(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch", type=int, default=16, help="probe batch size (default 16)")
    parser.add_argument("--size", type=int, default=224, help="probe height and width (default 224)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table for a README")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak RSS subprocesses")
    parser.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child is not None:
        memory_child(args._memory_child, args.batch, args.size)
        return

    shape = f"[{args.batch}, 3, {args.size}, {args.size}]"
    print(f"probe-pass benchmark: resnet18(weights=None).eval(), probe {shape}, CPU ({platform.machine()})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    s = build_setup(args.batch, args.size)
    check_agreement(s)
    print(f"timing: {args.warmup} warm-up + {args.repeats} timed rounds, variants interleaved round-robin")
    times = time_variants(s, args.warmup, args.repeats)
    memory = {} if args.no_memory else measure_memory(args)

    base, base_min = statistics.median(times[BASELINE]), min(times[BASELINE])
    width = max(len(n) for n in VARIANTS)
    print()
    print("ratio = median / median of the bare minimum; min ratio = min / min of the bare minimum")
    head = f"{'median ms':>10}  {'min ms':>9}  {'ratio':>6}  {'min ratio':>9}  {'peak extra RSS':>14}"
    print(f"{'variant':<{width}}  {head}")
    for name, ts in times.items():
        mem = memory.get(name)
        mem_s = "skipped" if args.no_memory else ("n/a" if mem is None else f"{mem:.0f} MiB")
        med, low = statistics.median(ts), min(ts)
        ratios = f"{med / base:>5.2f}x  {low / base_min:>8.2f}x"
        print(f"{name:<{width}}  {med:>10.1f}  {low:>9.1f}  {ratios}  {mem_s:>14}")
    ratio_ours = statistics.median(times[OURS]) / base
    print()
    print(f"goal: ours <= {GOAL:.2f}x bare minimum")
    print(f"result: ours is {ratio_ours:.2f}x bare minimum ({'met' if ratio_ours <= GOAL else 'NOT met'})")

    if args.markdown:
        print()
        print("| variant | median ms | ratio vs bare minimum |")
        print("|---|---:|---:|")
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts):.1f} | {statistics.median(ts) / base:.2f}x |")


if __name__ == "__main__":
    main()
