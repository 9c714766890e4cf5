"""How every cost grows: probe size, resolution and model size, as a ratio to the bare forward + backward.

For each cell of the grid (a model at random init, a probe of ``N`` images at ``R`` px) a fresh child process
builds the model, then measures, for the baseline and each method family:

- peak memory: after one warm-up call of every variant (lazy initialisation is not charged to the first one
  measured), the peak extra resident memory of one call (Linux ``VmHWM`` after the call minus ``VmRSS`` before,
  the high-water mark reset through ``/proc/self/clear_refs``; see ``_memory.py``). The children run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc hands every tensor's memory back on free and each variant starts
  from the same resident set (``tracemalloc`` does not see torch's allocations);
- time: the median of ``--repeats`` calls (the memory call is the first), the variants interleaved round-robin, as
  CPU time of the process (``time.process_time``) with ``--threads`` torch threads (default 1): on a machine
  shared with other jobs, wall-clock time measures the neighbours; CPU time of one thread does not.

The baseline is the bare pass a user's validation step would need to get an input gradient: one forward in eval
mode, the predicted class's score, one ``torch.autograd.grad`` to the input (the model's own fused attention).
Families (one ``explain`` call each, the layer given as the callback fixes it after its first dry run):

- ``defaults``: ``gradcam``, ``saliency``, ``activations`` (the callback's default, one hooked pass);
- ``cams``: ``gradcam``, ``gradcampp``, ``xgradcam``, ``layercam``, ``hirescam`` (one pass);
- ``input_grads``: ``saliency``, ``gradxinput`` (one pass);
- ViTs only: ``attention`` (``attention`` + ``rollout``, a no-grad forward with eager attention) and
  ``grad_rollout`` (forward + one ``autograd.grad``, folded in the backward).

Axes: the probe (8, 16, 64 images at 224 px), the resolution (224, 384, 448 px, 8 images) and the model
(ResNet-18/50, ViT-S/16, ViT-B/16 at 224 px, 8 images). Along each axis the growth exponent ``k`` of
``cost ~ x^k`` is fitted (least squares in log-log; ``x`` = images, pixels, or parameters).

Drift: ``MapMetrics.update`` (focus + drift numbers of 16 maps of 64 px, the size the history keeps, two methods)
over a 100-epoch history; the time of epochs 2-11 and 91-100, the fitted exponent of the per-epoch time against the
epoch index (0 = constant), and the history's state size (it keeps the first and the previous epoch only).

Run::

    python benchmarks/bench_scaling.py --quick          # ResNet-18 and ViT-S, N in (8, 16), R in (224, 384)
    python benchmarks/bench_scaling.py                  # the full grid (slow on a CPU: hours on 2 cores)
    python benchmarks/bench_scaling.py --markdown       # print the tables as Markdown

No timing is asserted anywhere; on a shared machine read the ratios, not one number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_explain.functional import explain

FAMILIES: dict[str, tuple[str, ...]] = {
    "defaults": ("gradcam", "saliency", "activations"),
    "cams": ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam"),
    "input_grads": ("saliency", "gradxinput"),
    "attention": ("attention", "rollout"),
    "grad_rollout": ("grad_rollout",),
}
VIT_ONLY = {"attention", "grad_rollout"}
GOALS = {"defaults": 1.2, "cams": 1.2, "input_grads": 1.2, "grad_rollout": 1.3}
MODELS = ("resnet18", "resnet50", "vit_s16", "vit_b16")


@dataclass(frozen=True)
class Cell:
    axis: str
    model: str
    images: int
    size: int

    def args(self) -> list[str]:
        return ["--child", self.model, str(self.images), str(self.size)]


def grid(quick: bool) -> list[Cell]:
    if quick:
        return [
            Cell("probe", "resnet18", 8, 224),
            Cell("probe", "resnet18", 16, 224),
            Cell("probe", "vit_s16", 8, 224),
            Cell("resolution", "vit_s16", 8, 384),
            Cell("model", "resnet50", 8, 224),
        ]
    cells = [Cell("probe", m, n, 224) for m in ("resnet18", "vit_s16") for n in (8, 16, 64)]
    cells += [Cell("resolution", m, 8, r) for m in ("resnet50", "vit_s16") for r in (384, 448)]
    cells += [Cell("model", m, 8, 224) for m in ("resnet50", "vit_b16")]
    return cells


def build(name: str, size: int) -> tuple[nn.Module, str]:
    """A model at random init (seeded) and the layer the CAMs read."""
    torch.manual_seed(0)
    if name.startswith("resnet"):
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        return model.eval(), "layer4"
    import timm

    from lightning_explain.functional import default_token_layer, vit_layout

    arch = {"vit_s16": "vit_small_patch16_224", "vit_b16": "vit_base_patch16_224"}[name]
    model = timm.create_model(arch, pretrained=False, img_size=size).eval()
    return model, default_token_layer(model, vit_layout(model))


def bare_pass(model: nn.Module, x: Tensor) -> None:
    """One forward, the predicted class's score, one ``autograd.grad`` to the input."""
    inputs = x.clone().requires_grad_(True)
    logits = model(inputs)
    score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()
    torch.autograd.grad(score, inputs)


def calls(model: nn.Module, x: Tensor, layer: str, vit: bool) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {"bare": lambda: bare_pass(model, x)}
    for family, methods in FAMILIES.items():
        if family in VIT_ONLY and not vit:
            continue
        needs_layer = family in ("defaults", "cams")
        out[family] = lambda m=methods, nl=needs_layer: explain(model, x, layer if nl else None, m)
    return out


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_extra_mib(fn: Callable[[], object]) -> float:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _rss_kib("VmRSS")
    except OSError:
        return math.nan
    fn()
    return (_rss_kib("VmHWM") - before) / 1024.0


def child(model_name: str, images: int, size: int, repeats: int, threads: int) -> None:
    torch.set_num_threads(threads)
    model, layer = build(model_name, size)
    x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    fns = calls(model, x, layer, model_name.startswith("vit"))
    for fn in fns.values():
        fn()  # warm-up: lazy initialisation (thread pools, kernel caches) is charged to no variant
    times: dict[str, list[float]] = {name: [] for name in fns}
    memory: dict[str, float] = {}
    for name, fn in fns.items():
        start = time.process_time()
        memory[name] = peak_extra_mib(fn)
        times[name].append(time.process_time() - start)
    for _ in range(repeats - 1):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {"memory_mib": memory, "seconds": {k: statistics.median(v) for k, v in times.items()}, "params": params}
        )
    )


def run_cell(cell: Cell, repeats: int, threads: int) -> dict[str, object] | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's package, not an installed one
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, *cell.args(), "--repeats", str(repeats), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        print(f"  {cell} failed: {proc.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return math.nan
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else math.nan


def drift_history(epochs: int = 100, images: int = 16, size: int = 64) -> dict[str, float]:
    from lightning_explain.epoch.history import MapMetrics

    metrics = MapMetrics()
    generator = torch.Generator().manual_seed(0)
    per_epoch = []
    for _ in range(epochs):
        maps = {m: torch.rand(images, size, size, generator=generator) for m in ("gradcam", "saliency")}
        start = time.process_time()
        for method, value in maps.items():
            metrics.update(method, value)
        per_epoch.append(time.process_time() - start)
    state_bytes = sum(t.numel() * t.element_size() for d in metrics.state_dict().values() for t in d.values())
    return {
        "first10_ms": 1000 * statistics.median(per_epoch[1:11]),
        "last10_ms": 1000 * statistics.median(per_epoch[-10:]),
        "exponent": exponent(list(range(2, epochs + 1)), per_epoch[1:]),
        "state_kib": state_bytes / 1024,
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, CPU"


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report(results: list[tuple[Cell, dict]], drift: dict[str, float] | None, markdown: bool) -> None:
    print(f"\nmachine: {machine()}; times are CPU seconds of the child process\n")
    header = ["axis", "model", "N", "px", "bare s", "bare MiB"]
    families = [f for f in FAMILIES if any(f in r["seconds"] for _, r in results)]
    header += [f"{f} (t, mem)" for f in families]
    lines = [header]
    for cell, res in results:
        bare_t, bare_m = res["seconds"]["bare"], res["memory_mib"]["bare"]
        row = [cell.axis, cell.model, str(cell.images), str(cell.size), _fmt(bare_t), _fmt(bare_m, 0)]
        for f in families:
            if f in res["seconds"]:
                mem = res["memory_mib"][f] / bare_m if bare_m and bare_m > 0 else math.nan
                row.append(f"{_fmt(res['seconds'][f] / bare_t)}x, {_fmt(mem)}x")
            else:
                row.append("")
        lines.append(row)
    _table(lines, markdown)
    print("\ngrowth exponents (cost ~ x^k; x = images, pixels or parameters), time / memory:\n")
    rows = [["axis", "model", "variant", "k time", "k memory"]]
    axes: list[tuple[str, Callable[[Cell], bool], Callable[[Cell, dict], float]]] = [
        ("images", lambda c: c.size == 224, lambda c, r: c.images),
        ("pixels", lambda c: c.images == 8, lambda c, r: c.size**2),
    ]
    for axis, member, xvalue in axes:
        for model in MODELS:
            cells = [(c, r) for c, r in results if c.model == model and member(c)]
            if len({xvalue(c, r) for c, r in cells}) < 2:
                continue
            xs = [xvalue(c, r) for c, r in cells]
            for family in ("bare", *FAMILIES):
                if all(family in r["seconds"] for _, r in cells):
                    t = exponent(xs, [r["seconds"][family] for _, r in cells])
                    m = exponent(xs, [r["memory_mib"][family] for _, r in cells])
                    rows.append([axis, model, family, _fmt(t), _fmt(m)])
    for kind in ("resnet", "vit"):
        cells = [(c, r) for c, r in results if c.model.startswith(kind) and c.images == 8 and c.size == 224]
        if len({r["params"] for _, r in cells}) < 2:
            continue
        xs = [float(r["params"]) for _, r in cells]
        for family in ("bare", "defaults"):
            t = exponent(xs, [r["seconds"][family] for _, r in cells])
            m = exponent(xs, [r["memory_mib"][family] for _, r in cells])
            rows.append(["parameters", kind, family, _fmt(t), _fmt(m)])
    _table(rows, markdown)
    if drift is not None:
        print("\ndrift numbers over a 100-epoch history (16 maps of 64 px, gradcam + saliency):\n")
        _table(
            [
                ["epochs 2-11 ms/epoch", "epochs 91-100 ms/epoch", "k (time vs epoch)", "history state KiB"],
                [
                    _fmt(drift["first10_ms"]),
                    _fmt(drift["last10_ms"]),
                    _fmt(drift["exponent"]),
                    _fmt(drift["state_kib"], 0),
                ],
            ],
            markdown,
        )
    print("\ngoals: time and peak memory within " + ", ".join(f"{k} {v}x" for k, v in GOALS.items()))


def _table(lines: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(lines[0]) + " |")
        print("|" + "---|" * len(lines[0]))
        for row in lines[1:]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    for row in lines:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (ResNet-18/50, ViT-S; N 8-16; 224-384 px)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (quick: 2, full: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-drift", action="store_true", help="skip the 100-epoch drift history")
    parser.add_argument("--cells", help="only these cells, e.g. 'resnet18:64:224,vit_b16:8:224' (model:images:px)")
    parser.add_argument("--from-log", nargs="+", metavar="LOG", help="print the tables from the lines of earlier runs")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "IMAGES", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), repeats, args.threads)
        return
    results: list[tuple[Cell, dict]] = []
    if args.from_log:
        for log in args.from_log:
            with open(log) as lines:
                for line in lines:
                    found = re.match(r"Cell\(axis='(\w+)', model='(\w+)', images=(\d+), size=(\d+)\).*?(\{.*)", line)
                    if found:
                        axis, model, images, size, data = found.groups()
                        results.append((Cell(axis, model, int(images), int(size)), json.loads(data)))
        report(results, None if args.no_drift else drift_history(), args.markdown)
        return
    cells = grid(args.quick)
    if args.cells:
        axis = {"resnet18": "probe", "vit_s16": "probe"}
        cells = []
        for spec in args.cells.split(","):
            model, images, size = spec.split(":")
            kind = "resolution" if int(size) != 224 else axis.get(model, "model") if int(images) == 8 else "probe"
            cells.append(Cell(kind, model, int(images), int(size)))
    for cell in cells:
        start = time.perf_counter()
        res = run_cell(cell, repeats, args.threads)
        print(f"{cell}: {time.perf_counter() - start:.0f} s  {json.dumps(res)}", flush=True)
        if res is not None:
            results.append((cell, res))
    drift = None if args.no_drift else drift_history()
    report(results, drift, args.markdown)


if __name__ == "__main__":
    main()
