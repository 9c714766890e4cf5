"""A small mutation run: plant plausible bugs in ``functional/`` and in the callbacks' option plumbing, one at a time,
run the test files that should notice, and report how many mutants survive.

Each mutant replaces one exact snippet of one file (it must occur exactly once) in a scratch copy of the package and
the tests, so the working tree is never touched. ``make mutation`` runs it; it is not part of ``make test``.

    python tools/mutation.py                 # every mutant
    python tools/mutation.py --only lime     # the mutants whose name contains "lime"
    python tools/mutation.py --list          # the mutants, without running them
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
F = "lightning_explain/functional/"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


#: The fast, targeted files first: ``-x`` stops at the first failure, so a killed mutant costs little.
FAITH = (
    "tests/functional/test_faithfulness_baselines.py",
    "tests/epoch/test_faithfulness_schedule.py",
    "tests/functional/test_faithfulness.py",
)
LIME = ("tests/functional/test_lime.py",)
CALLBACK = ("tests/callbacks/test_explain_options.py",)
ACTMAX = ("tests/callbacks/test_activation_max.py", "tests/callbacks/test_activation_max_options.py")
CAMS = ("tests/functional/test_engine.py", "tests/functional/test_methods.py")
ROLLOUT = ("tests/functional/test_model_zoo_layouts.py", "tests/capture/test_attention.py")

MUTANTS = [
    # functional/faithfulness.py
    Mutant("road noise on every pixel", F + "faithfulness.py",
           "torch.where(removed[:, None], filled + noise * jitter, filled)", "filled + noise * jitter",
           FAITH),
    Mutant("blur border reflect", F + "faithfulness.py", 'mode="replicate"', 'mode="reflect"', FAITH),
    Mutant("blur radius 2 sigma", F + "faithfulness.py", "radius = max(1, math.ceil(3 * sigma))",
           "radius = max(1, math.ceil(2 * sigma))", FAITH),
    Mutant("deletion steps off by one", F + "faithfulness.py", "* (height * width / steps)",
           "* (height * width / (steps + 1))", FAITH),
    Mutant("road lerf ranks like morf", F + "faithfulness.py",
           'maps.to(device) if order == "morf" else -maps.to(device)', "maps.to(device)", FAITH),
    # functional/lime.py
    Mutant("lime uniform kernel", F + "lime.py", "_ridge(z, scores, _kernel(z, kernel_width), ridge)",
           "_ridge(z, scores, torch.ones(z.shape[0], dtype=z.dtype), ridge)", LIME),
    Mutant("lime global mean", F + "lime.py", "fill = image.mean(dim=(2, 3), keepdim=True)",
           "fill = image.mean().expand(1, image.shape[1], 1, 1)", LIME),
    Mutant("lime first sample random", F + "lime.py", "z[0] = 1  # the image itself", "pass", LIME),
    Mutant("lime distance not squared", F + "lime.py", "torch.exp(-(distance**2) / width**2)",
           "torch.exp(-distance / width**2)", LIME),
    Mutant("lime ridge penalty dropped", F + "lime.py", "if ridge > 0:", "if False:", LIME),
    # functional/cams.py, rollout.py, metrics.py, activation_max.py
    Mutant("gradcam weights max instead of mean", F + "cams.py", "return gradients.mean(dim=(2, 3))",
           "return gradients.amax(dim=(2, 3))", CAMS),
    Mutant("cam without relu", F + "cams.py",
           'return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))',
           'return torch.einsum("bk,bkhw->bhw", weights, activations).abs()', CAMS),
    Mutant("rollout without residual identity", F + "rollout.py", "mixed = 0.5 * fused + 0.5 * eye", "mixed = fused",
           ROLLOUT),
    Mutant("lift without area", F + "metrics.py", "(e - r) / (1 - r).clamp_min(1e-12)", "e / (1 - r).clamp_min(1e-12)",
           ("tests/functional/test_metrics.py",)),
    Mutant("activation max jitter ignored", F + "activation_max.py",
           "value = objective.value(torch.roll(pixels, shifts=shift, dims=(2, 3)))", "value = objective.value(pixels)",
           ACTMAX),
    Mutant("activation max l2 dropped", F + "activation_max.py",
           "+ l2_weight * (pixels - 0.5).pow(2).flatten(1).mean(1)", "+ 0.0 * (pixels - 0.5).pow(2).flatten(1).mean(1)",
           ACTMAX),
    Mutant("occlusion stride = window", F + "perturbation.py", "return [i * stride for i in range(count)]",
           "return [i * window for i in range(count)]",
           ("tests/callbacks/test_explain_options.py", "tests/functional/test_methods.py")),
    # callbacks' option plumbing
    Mutant("explain options dropped", "lightning_explain/callbacks/explain.py",
           "options={m: o for m, o in self._fn_options.items() if m in methods},", "options={},", CALLBACK),
    Mutant("method options of the first method only", "lightning_explain/epoch/schedule.py",
           "            functional[method] = check_options({method: opts})[method]",
           "            functional[method] = check_options({method: opts})[method] if not functional else {}",
           CALLBACK),
    Mutant("faithfulness road gap sign", "lightning_explain/epoch/faithfulness_schedule.py", "road_gap=lerf - morf",
           "road_gap=morf - lerf", FAITH),
    Mutant("faithfulness targets ignored", "lightning_explain/epoch/faithfulness_schedule.py",
           "model, x, maps, classes.clamp_min(0), steps=self.steps", "model, x, maps, None, steps=self.steps", FAITH),
    Mutant("faithfulness blur sigma dropped", "lightning_explain/epoch/faithfulness_schedule.py",
           "blur_sigma=self.blur_sigma,", "blur_sigma=None,", FAITH),
    Mutant("faithfulness road percentiles dropped", "lightning_explain/epoch/faithfulness_schedule.py",
           "percentiles=self.percentiles, order=o", "order=o", FAITH),
    Mutant("activation max view ignores l2_weight", "lightning_explain/callbacks/activation_max.py",
           "l2_weight=self.l2_weight,", "l2_weight=0.0,", ACTMAX),
]  # fmt: skip


def run(mutant: Mutant, scratch: Path, timeout: int) -> str:
    """``killed``, ``survived`` or ``timeout`` for one mutant (applied to the scratch copy, restored after)."""
    target = scratch / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return f"stale (the snippet occurs {original.count(mutant.old)} times)"
    target.write_text(original.replace(mutant.old, mutant.new))
    try:
        tests = [t for t in mutant.tests if (scratch / t).exists()]
        cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
        result = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True, timeout=timeout, check=False)
        return "survived" if result.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        target.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        scratch = Path(tmp)
        for name in ("lightning_explain", "tests"):
            shutil.copytree(ROOT / name, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
        outcomes: dict[str, list[str]] = {}
        for m in chosen:
            shutil.rmtree(scratch / "tests")  # the tests as they are now (a long run sees tests added meanwhile)
            shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            started = time.perf_counter()
            outcome = run(m, scratch, args.timeout)
            outcomes.setdefault(outcome.split(" ")[0], []).append(m.name)
            print(f"{outcome:9s} {time.perf_counter() - started:6.0f} s  {m.name}", flush=True)
    ran = len(outcomes.get("killed", [])) + len(outcomes.get("survived", []))
    survived = outcomes.get("survived", [])
    print(f"\n{len(survived)} of {ran} mutants survived ({100 * len(survived) / max(ran, 1):.0f} %)")
    for name in survived:
        print(f"  survived: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
