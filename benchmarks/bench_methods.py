"""Benchmark: every explanation method of ``lightning_explain.functional`` against its usual peer, same inputs.

What it measures (CPU, torchvision ``resnet18(weights=None)`` in eval mode, a seeded ``torch.rand`` probe of
``--batch`` x 3 x ``--size`` x ``--size``, target layer ``layer4``; the target classes are the model's
predictions, computed once up front and passed to both sides), wall-clock per call of ours and of the peer:

* ``gradcam``, ``gradcampp``, ``xgradcam``, ``layercam``, ``hirescam``, ``eigencam``: ours
  ``explain(model, x, "layer4", (method,), targets)[method]``; peer pytorch-grad-cam ``GradCAM``,
  ``GradCAMPlusPlus``, ``XGradCAM``, ``LayerCAM``, ``HiResCAM``, ``EigenCAM`` with ``ClassifierOutputTarget``.
* ``scorecam``: ours ``score_cam(model, x, "layer4", targets, batch_size=B)``; peer pytorch-grad-cam
  ``ScoreCAM`` with ``cam.batch_size = B``. ``scorecam_bf16``: the same with our opt-in ``precision="bf16"``
  (masked passes under bfloat16 autocast), against the same fp32 peer.
* ``smoothgrad``: ours ``smooth_grad(model, x, targets, samples=S, noise=..., internal_batch_size=M)``; peer
  captum ``NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", ...)``.
* ``integrated_gradients``: ours ``integrated_gradients(model, x, targets, steps=N, internal_batch_size=M)``;
  peer captum ``IntegratedGradients(model).attribute(..., n_steps=N, method="gausslegendre", ...)``.
* ``gradxinput``: ours ``gradient_x_input(model, x, targets)``; peer captum ``InputXGradient``.
* ``occlusion``: ours ``occlusion(model, x, targets, window=(32, 32), stride=(16, 16), batch_size=64)``; peer
  captum ``Occlusion(model).attribute(x, (3, 32, 32), strides=(3, 16, 16), baselines=0, ...)``.

Settings shared by both sides: Score-CAM masks ``--scorecam-batch`` images per forward (pytorch-grad-cam's
``cam.batch_size``); SmoothGrad draws ``--smoothgrad-samples`` noisy copies per image with standard deviation
0.15 x (max - min) of the probe, ``--internal-batch`` images per forward (captum's ``nt_samples_batch_size`` is
that divided by the batch, as captum counts noisy copies *per image*); Integrated Gradients uses
``--ig-steps`` Gauss-Legendre steps and ``internal_batch_size=--internal-batch``; Occlusion slides a 32 x 32
window with stride 16 (over all colour channels, baseline 0) and evaluates ``--occlusion-batch`` occluded
images per forward for ours, ``perturbations_per_eval=--occlusion-batch`` for captum (which then forwards
``--occlusion-batch`` x ``--batch`` images at once: captum perturbs the whole batch together).

Peer objects are built once outside the timed region, as in a user's loop. Each pytorch-grad-cam object keeps
its hooks on its model for its whole life, so each gets its own ``copy.deepcopy`` of the model (same weights)
and does not slow down the other variants; captum objects hold no hooks and share the model with ours.

Before timing, the script checks that our result and the peer's agree numerically on the probe: max absolute
difference of the min-max normalised maps (``norm``), and, where both sides return raw attributions, max
absolute difference divided by the peer's max absolute value (``raw rel``). EigenCAM's principal direction
has an arbitrary sign per image (pytorch-grad-cam keeps whatever the SVD returns; we orient it along the mean
activation): its difference is the smaller one over both signs of the peer's projection, and the number of
images whose sign differs is printed. SmoothGrad's check replays captum's noise draw (seeded global RNG, one
``torch.normal`` per partition of ``nt_samples_batch_size`` copies of each image, repeat-interleaved) and
passes the same noise to ours as ``noise=``; the timed calls use a fixed noise tensor for ours and captum's
own draws. Score-CAM's check runs on the first ``--scorecam-check-images`` images only (it is the slowest).

Timing: the check's call is each variant's first (cold) call and counts as a warm-up; ``--warmup`` N makes
N - 1 more untimed calls. Then ``--repeats`` timed rounds (``--scorecam-repeats`` for Score-CAM) per method;
ours and the peer alternate, the order swapping each round, so machine noise hits both alike. It reports
median and min per side in ms and ours / peer (median / median; min / min). No timing is asserted.

Memory: unless ``--no-memory``, each variant is run once in a fresh subprocess (after building the model,
probe, targets and that method's peer object) and the growth of the process's peak resident set size over
that one call is reported as "peak extra RSS": Linux ``/proc/self/status`` ``VmHWM`` after the call minus
``VmRSS`` before it (the high-water mark is reset first through ``/proc/self/clear_refs``). It is a cold first
call, so it includes one-time caches. ``tracemalloc`` does not see torch's allocations, and ``ru_maxrss`` of a
child started by ``subprocess`` inherits the parent's high-water mark, hence this route; off Linux it prints
n/a. Note that pytorch-grad-cam's ScoreCAM builds every masked input of every image at once
(batch x channels x 3 x H x W floats, 2.3 GiB for the defaults) and keeps the hooked activations of every
masked forward; that is measured as it is.

Run::

    .venv/bin/python benchmarks/bench_methods.py                     # everything (long: Score-CAM, Occlusion)
    .venv/bin/python benchmarks/bench_methods.py --markdown          # plus a README-ready markdown table
    .venv/bin/python benchmarks/bench_methods.py --methods gradcam,eigencam --repeats 5 --no-memory
    .venv/bin/python benchmarks/bench_methods.py --methods scorecam --scorecam-batch 128 --scorecam-repeats 2

Goals: every method at most as slow as the peer (ours / peer <= 1.00); Score-CAM at least 3x faster than
pytorch-grad-cam (ours / peer <= 0.33).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _memory import child_peak_mib, print_peak_extra_mib
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from lightning_explain.functional import (
    explain,
    gradient_x_input,
    integrated_gradients,
    normalize_maps,
    occlusion,
    score_cam,
    smooth_grad,
)

LAYER = "layer4"
SEED = 0
NOISE_SEED = 1
NOISE_LEVEL = 0.15
WINDOW = (32, 32)
STRIDE = (16, 16)
RATIO_GOAL = 1.00
SCORECAM_GOAL = 0.33
CAMS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
SCORECAMS = ("scorecam", "scorecam_bf16")  # ours in fp32 and with the opt-in precision="bf16"; same peer
METHODS = (*CAMS, "scorecam_bf16", "smoothgrad", "integrated_gradients", "gradxinput", "occlusion")
PEER_NAMES = {
    **{m: f"pytorch-grad-cam {cls.__name__}" for m, cls in CAMS.items()},
    "scorecam_bf16": "pytorch-grad-cam ScoreCAM (fp32)",
    "smoothgrad": "captum NoiseTunnel(Saliency)",
    "integrated_gradients": "captum IntegratedGradients",
    "gradxinput": "captum InputXGradient",
    "occlusion": "captum Occlusion",
}
SIDES = ("ours", "peer")

# captum sets requires_grad on the probe itself and says so on every call; that is expected here.
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


def _as_tensor(value: Any) -> Tensor:
    return torch.from_numpy(np.asarray(value)) if not isinstance(value, Tensor) else value.detach()


def _norm_diff(a: Any, b: Any) -> float:
    """Max abs difference of the min-max normalised maps."""
    return (normalize_maps(_as_tensor(a).float()) - normalize_maps(_as_tensor(b).float())).abs().max().item()


def _raw_rel_diff(a: Any, b: Any) -> float:
    """Max abs difference of raw attributions over the peer's max abs value."""
    a, b = _as_tensor(a).float(), _as_tensor(b).float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@dataclass
class Config:
    batch: int
    size: int
    scorecam_batch: int
    samples: int
    internal_batch: int
    ig_steps: int
    occlusion_batch: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        return cls(
            args.batch,
            args.size,
            args.scorecam_batch,
            args.smoothgrad_samples,
            args.internal_batch,
            args.ig_steps,
            args.occlusion_batch,
        )

    @property
    def nt_batch(self) -> int:
        """captum's ``nt_samples_batch_size``: noisy copies per image per forward."""
        return max(1, min(self.samples, self.internal_batch // self.batch))


@dataclass
class Setup:
    """Everything the variants of the selected methods share; built once per process."""

    cfg: Config
    model: nn.Module
    probe: Tensor
    classes: Tensor
    cam_targets: list[ClassifierOutputTarget]
    stdev: float
    noise: Tensor  # [samples, B, C, H, W], fixed: ours' timed SmoothGrad input
    peers: dict[str, Any] = field(default_factory=dict)


def build_setup(cfg: Config, methods: tuple[str, ...]) -> Setup:
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    probe = torch.rand(cfg.batch, 3, cfg.size, cfg.size)
    with torch.no_grad():
        classes = model(probe).argmax(dim=1)
    stdev = NOISE_LEVEL * float(probe.max() - probe.min())
    noise = captum_noise(probe, stdev, cfg.samples, cfg.nt_batch, NOISE_SEED)
    s = Setup(cfg, model, probe, classes, [ClassifierOutputTarget(int(c)) for c in classes], stdev, noise)
    for method in methods:
        if method in CAMS or method in SCORECAMS:
            # pytorch-grad-cam's hooks stay on its model while the object lives: its own copy (same weights).
            cam_model = copy.deepcopy(model)
            cam_class = ScoreCAM if method in SCORECAMS else CAMS[method]
            cam = cam_class(model=cam_model, target_layers=[cam_model.layer4])  # its constructor calls .eval()
            if method in SCORECAMS:
                cam.batch_size = cfg.scorecam_batch
            s.peers[method] = cam
        elif method == "smoothgrad":
            s.peers[method] = NoiseTunnel(Saliency(model))
        elif method == "integrated_gradients":
            s.peers[method] = IntegratedGradients(model)
        elif method == "gradxinput":
            s.peers[method] = InputXGradient(model)
        elif method == "occlusion":
            s.peers[method] = Occlusion(model)
    return s


def captum_noise(x: Tensor, stdev: float, samples: int, per_call: int, seed: int) -> Tensor:
    """The noise captum's NoiseTunnel draws after ``torch.manual_seed(seed)``, as ``[samples, B, C, H, W]``.

    captum draws one ``torch.normal`` of ``[B * p, C, H, W]`` per partition of ``p`` copies per image and adds
    it to ``x.repeat_interleave(p, 0)`` (row ``b * p + j`` is copy ``j`` of image ``b``).
    """
    batch, rest = x.shape[0], tuple(x.shape[1:])
    torch.manual_seed(seed)
    parts = []
    done = 0
    while done < samples:
        p = min(per_call, samples - done)  # captum's last partition holds the remainder
        draw = torch.normal(0, torch.tensor(stdev).repeat((batch * p, *rest)))
        parts.append(draw.view(batch, p, *rest).transpose(0, 1))
        done += p
    return torch.cat(parts).contiguous()


# ---------------------------------------------------------------------------------------------------- variants


def _ours_cam(method: str) -> Callable[[Setup], Any]:
    def run(s: Setup) -> Tensor:
        return explain(s.model, s.probe, LAYER, (method,), s.classes)[method]

    return run


def _peer_cam(method: str) -> Callable[[Setup], Any]:
    def run(s: Setup) -> Any:
        with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM draws tqdm progress bars
            return s.peers[method](input_tensor=s.probe, targets=s.cam_targets)

    return run


def ours_scorecam(s: Setup) -> Tensor:
    return score_cam(s.model, s.probe, LAYER, s.classes, batch_size=s.cfg.scorecam_batch)


def ours_scorecam_bf16(s: Setup) -> Tensor:
    return score_cam(s.model, s.probe, LAYER, s.classes, batch_size=s.cfg.scorecam_batch, precision="bf16")


def ours_smoothgrad(s: Setup) -> Tensor:
    return smooth_grad(
        s.model, s.probe, s.classes, samples=s.cfg.samples, noise=s.noise, internal_batch_size=s.cfg.internal_batch
    )


def peer_smoothgrad(s: Setup) -> Tensor:
    return s.peers["smoothgrad"].attribute(
        s.probe,
        nt_type="smoothgrad",
        nt_samples=s.cfg.samples,
        nt_samples_batch_size=s.cfg.nt_batch,
        stdevs=s.stdev,
        target=s.classes,
    )


def ours_ig(s: Setup) -> Tensor:
    return integrated_gradients(
        s.model, s.probe, s.classes, steps=s.cfg.ig_steps, internal_batch_size=s.cfg.internal_batch
    )


def peer_ig(s: Setup) -> Tensor:
    return s.peers["integrated_gradients"].attribute(
        s.probe,
        target=s.classes,
        n_steps=s.cfg.ig_steps,
        method="gausslegendre",
        internal_batch_size=s.cfg.internal_batch,
    )


def ours_gradxinput(s: Setup) -> Tensor:
    return gradient_x_input(s.model, s.probe, s.classes)


def peer_gradxinput(s: Setup) -> Tensor:
    return s.peers["gradxinput"].attribute(s.probe, target=s.classes)


def ours_occlusion(s: Setup) -> Tensor:
    return occlusion(s.model, s.probe, s.classes, window=WINDOW, stride=STRIDE, batch_size=s.cfg.occlusion_batch)


def peer_occlusion(s: Setup) -> Tensor:
    return s.peers["occlusion"].attribute(
        s.probe,
        sliding_window_shapes=(3, *WINDOW),
        strides=(3, *STRIDE),
        baselines=0,
        target=s.classes,
        perturbations_per_eval=s.cfg.occlusion_batch,
    )


VARIANTS: dict[str, dict[str, Callable[[Setup], Any]]] = {
    **{m: {"ours": _ours_cam(m), "peer": _peer_cam(m)} for m in CAMS if m != "scorecam"},
    "scorecam": {"ours": ours_scorecam, "peer": _peer_cam("scorecam")},
    "scorecam_bf16": {"ours": ours_scorecam_bf16, "peer": _peer_cam("scorecam_bf16")},
    "smoothgrad": {"ours": ours_smoothgrad, "peer": peer_smoothgrad},
    "integrated_gradients": {"ours": ours_ig, "peer": peer_ig},
    "gradxinput": {"ours": ours_gradxinput, "peer": peer_gradxinput},
    "occlusion": {"ours": ours_occlusion, "peer": peer_occlusion},
}


# --------------------------------------------------------------------------------------------------- agreement


def _eigen_agreement(s: Setup, ours_map: Tensor, peer_map: Any) -> str:
    """Max |ours - peer| per image, the smaller over both signs of the peer's principal direction."""
    seen: list[Tensor] = []
    handle = s.model.layer4.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            s.model(s.probe)
    finally:
        handle.remove()
    act = seen[-1].float().flatten(2).transpose(1, 2)  # [B, hw, K]
    centred = act - act.mean(dim=1, keepdim=True)
    vh = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0, :]
    proj = torch.einsum("bnk,bk->bn", centred, vh).view(s.probe.shape[0], 1, *seen[-1].shape[-2:])
    size = tuple(s.probe.shape[-2:])
    plus = normalize_maps(F.interpolate(torch.relu(proj), size=size, mode="bilinear", align_corners=False)[:, 0])
    minus = normalize_maps(F.interpolate(torch.relu(-proj), size=size, mode="bilinear", align_corners=False)[:, 0])
    ours_n, peer_n = normalize_maps(ours_map.float()), normalize_maps(_as_tensor(peer_map).float())

    def per_image(a: Tensor, b: Tensor) -> Tensor:
        return (a - b).abs().flatten(1).amax(1)

    peer_is_plus = per_image(peer_n, plus) <= per_image(peer_n, minus)
    ours_is_plus = per_image(ours_n, plus) <= per_image(ours_n, minus)
    flipped_peer = torch.where(peer_is_plus[:, None, None], minus, plus)
    diff = torch.minimum(per_image(ours_n, peer_n), per_image(ours_n, flipped_peer)).max().item()
    flips = int((peer_is_plus != ours_is_plus).sum())
    return f"norm {diff:.1e} (sign differs on {flips}/{peer_is_plus.numel()} images)"


def check_agreement(s: Setup, method: str, check_images: int) -> str:
    """Call both sides once (their cold first call) and return a one-line agreement summary."""
    ours_fn, peer_fn = VARIANTS[method]["ours"], VARIANTS[method]["peer"]
    if method in SCORECAMS and 0 < check_images < s.probe.shape[0]:
        sub = copy.copy(s)
        sub.probe, sub.classes = s.probe[:check_images], s.classes[:check_images]
        sub.cam_targets = s.cam_targets[:check_images]
        return f"norm {_norm_diff(ours_fn(sub), peer_fn(sub)):.1e} (first {check_images} images)"
    if method == "eigencam":
        return _eigen_agreement(s, ours_fn(s), peer_fn(s))
    if method in CAMS or method in SCORECAMS:
        return f"norm {_norm_diff(ours_fn(s), peer_fn(s)):.1e}"
    if method == "smoothgrad":
        # Replay captum's draw: same seed right before its call, same noise passed to ours.
        noise = captum_noise(s.probe, s.stdev, s.cfg.samples, s.cfg.nt_batch, NOISE_SEED + 1)
        kw = {"samples": s.cfg.samples, "internal_batch_size": s.cfg.internal_batch}
        mine = smooth_grad(s.model, s.probe, s.classes, noise=noise, normalize=False, **kw)
        torch.manual_seed(NOISE_SEED + 1)
        theirs = peer_smoothgrad(s).amax(dim=1)
        return f"norm {_norm_diff(mine, theirs):.1e}, raw rel {_raw_rel_diff(mine, theirs):.1e} (same noise)"
    if method == "integrated_gradients":
        attr, theirs = ours_fn(s), peer_fn(s)
        return f"raw rel {_raw_rel_diff(attr, theirs):.1e}, norm {_norm_diff(attr.sum(1), theirs.sum(1)):.1e}"
    if method == "gradxinput":
        mine, theirs = ours_fn(s), peer_fn(s)
        return f"raw rel {_raw_rel_diff(mine, theirs):.1e}, norm {_norm_diff(mine.sum(1), theirs.sum(1)):.1e}"
    if method == "occlusion":
        mine, theirs = ours_fn(s), peer_fn(s)
        same = bool((theirs == theirs[:, :1]).all())  # captum's window spans all colour channels
        return f"raw rel {_raw_rel_diff(mine, theirs[:, 0]):.1e}, norm {_norm_diff(mine, theirs[:, 0]):.1e}" + (
            "" if same else " (peer channels differ!)"
        )
    raise ValueError(method)


# ------------------------------------------------------------------------------------------------------ timing


def time_method(s: Setup, method: str, warmup: int, repeats: int) -> dict[str, list[float]]:
    fns = VARIANTS[method]
    for _ in range(max(0, warmup - 1)):  # the agreement check already made one call per side
        for side in SIDES:
            fns[side](s)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(repeats):
        order = SIDES if r % 2 == 0 else SIDES[::-1]  # swap so neither side always goes first
        for side in order:
            gc.collect()
            start = time.perf_counter()
            out = fns[side](s)
            times[side].append((time.perf_counter() - start) * 1e3)
            del out
    return times


# ------------------------------------------------------------------------------------------------------ memory


def memory_child(cfg: Config, method: str, side: str) -> None:
    """Print the peak RSS growth in MiB of one call of ``method``'s ``side`` (nan where it cannot be measured)."""
    s = build_setup(cfg, (method,))
    fn = VARIANTS[method][side]
    print_peak_extra_mib(lambda: fn(s))


def _config_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--batch", str(args.batch), "--size", str(args.size), "--scorecam-batch", str(args.scorecam_batch)]
    flags += ["--smoothgrad-samples", str(args.smoothgrad_samples), "--internal-batch", str(args.internal_batch)]
    flags += ["--ig-steps", str(args.ig_steps), "--occlusion-batch", str(args.occlusion_batch)]
    return flags + (["--threads", str(args.threads)] if args.threads else [])


def measure_memory(args: argparse.Namespace, method: str) -> dict[str, float | None]:
    """Peak RSS growth (MiB) of one call per side, each in a fresh subprocess."""
    result: dict[str, float | None] = {}
    for side in SIDES:
        args_ = [__file__, *_config_flags(args), "--_memory-child", f"{method}:{side}"]
        result[side] = child_peak_mib(args_, f"{method}:{side}")
    return result


# -------------------------------------------------------------------------------------------------------- main


def _parse_methods(values: list[str]) -> tuple[str, ...]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return tuple(dict.fromkeys(names))


def _mib(value: float | None, skipped: bool) -> str:
    return "skipped" if skipped else ("n/a" if value is None else f"{value:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=[",".join(METHODS)], help="subset, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per method (default 3)")
    parser.add_argument("--scorecam-repeats", type=int, default=1, help="timed rounds for Score-CAM (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per side, the check's included")
    parser.add_argument("--batch", type=int, default=8, help="probe batch size (default 8)")
    parser.add_argument("--size", type=int, default=224, help="probe height and width (default 224)")
    parser.add_argument("--scorecam-batch", type=int, default=64, help="masked images per forward (default 64)")
    parser.add_argument("--scorecam-check-images", type=int, default=2, help="images in the Score-CAM check (0: all)")
    parser.add_argument("--smoothgrad-samples", type=int, default=8, help="SmoothGrad noisy copies (default 8)")
    parser.add_argument("--internal-batch", type=int, default=32, help="SmoothGrad / IG images per forward")
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--occlusion-batch", type=int, default=64, help="occlusions per forward (default 64)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table for a README")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak RSS subprocesses")
    parser.add_argument("--_memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        methods = _parse_methods(args.methods)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if min(args.repeats, args.scorecam_repeats) < 1:
        parser.error("--repeats and --scorecam-repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.from_args(args)
    if args._memory_child is not None:
        method, side = args._memory_child.split(":")
        memory_child(cfg, method, side)
        return

    shape = f"[{args.batch}, 3, {args.size}, {args.size}]"
    print(f"methods benchmark: resnet18(weights=None).eval(), probe {shape}, layer {LAYER}, CPU ({platform.machine()})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    s = build_setup(cfg, methods)
    print(f"targets (predicted classes): {s.classes.tolist()}")
    print(
        f"settings: Score-CAM batch {cfg.scorecam_batch}; SmoothGrad {cfg.samples} samples, stdev {s.stdev:.3f}, "
        f"{cfg.internal_batch} images per forward (captum nt_samples_batch_size {cfg.nt_batch}); IG {cfg.ig_steps} "
        f"steps, internal batch {cfg.internal_batch}; Occlusion window {WINDOW} stride {STRIDE}, "
        f"{cfg.occlusion_batch} occlusions per forward"
    )
    if any(m in methods for m in SCORECAMS):
        peer_gib = args.batch * 512 * 3 * args.size**2 * 4 / 2**30
        print(f"note: pytorch-grad-cam ScoreCAM materialises all masked inputs at once: {peer_gib:.2f} GiB")

    print()
    print("agreement check (norm: max |difference| of min-max normalised maps in [0, 1]; raw rel: max |difference|")
    print("of raw attributions / max |peer|), each side's first call:")
    agreement: dict[str, str] = {}
    for method in methods:
        start = time.perf_counter()
        agreement[method] = check_agreement(s, method, args.scorecam_check_images)
        print(f"  {method:<21} {agreement[method]}   [{time.perf_counter() - start:.1f} s]", flush=True)

    print()
    print(f"timing: {args.repeats} timed rounds ({args.scorecam_repeats} for Score-CAM), ours and peer alternating")
    times: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        repeats = args.scorecam_repeats if method in SCORECAMS else args.repeats
        start = time.perf_counter()
        times[method] = time_method(s, method, args.warmup, repeats)
        med = {side: statistics.median(times[method][side]) for side in SIDES}
        print(
            f"  {method:<21} ours {med['ours']:>10.1f} ms  peer {med['peer']:>10.1f} ms  "
            f"ratio {med['ours'] / med['peer']:.2f}   [{time.perf_counter() - start:.1f} s]",
            flush=True,
        )
    del s
    gc.collect()

    memory: dict[str, dict[str, float | None]] = {}
    if not args.no_memory:
        print()
        print("memory: one cold call per variant in a fresh subprocess (peak RSS growth)")
        for method in methods:
            memory[method] = measure_memory(args, method)
            print(
                f"  {method:<21} ours {_mib(memory[method]['ours'], False):>6} MiB  "
                f"peer {_mib(memory[method]['peer'], False):>6} MiB",
                flush=True,
            )

    print()
    print("ratio = ours median / peer median; min ratio = ours min / peer min; peak = peak extra RSS in MiB")
    head = (
        f"{'method':<21}  {'peer':<35}  {'ours med ms':>11}  {'ours min':>9}  {'peer med ms':>11}  {'peer min':>9}"
        f"  {'ratio':>6}  {'min ratio':>9}  {'ours peak':>9}  {'peer peak':>9}  agreement"
    )
    print(head)
    ratios: dict[str, float] = {}
    for method in methods:
        t = times[method]
        om, pm = statistics.median(t["ours"]), statistics.median(t["peer"])
        ratios[method] = om / pm
        mem = memory.get(method, {})
        print(
            f"{method:<21}  {PEER_NAMES[method]:<35}  {om:>11.1f}  {min(t['ours']):>9.1f}  {pm:>11.1f}  "
            f"{min(t['peer']):>9.1f}  {ratios[method]:>5.2f}x  {min(t['ours']) / min(t['peer']):>8.2f}x  "
            f"{_mib(mem.get('ours'), args.no_memory):>9}  {_mib(mem.get('peer'), args.no_memory):>9}  "
            f"{agreement[method]}"
        )

    print()
    print(f"goal: every method at most as slow as the peer (ratio <= {RATIO_GOAL:.2f})")
    for method in methods:
        verdict = "met" if ratios[method] <= RATIO_GOAL else "NOT met"
        print(f"  {method:<21} {ratios[method]:.2f}x  {verdict}")
    for method in SCORECAMS:
        if method in methods:
            print(f"goal: Score-CAM at least 3x faster than pytorch-grad-cam (ratio <= {SCORECAM_GOAL:.2f})")
            verdict = "met" if ratios[method] <= SCORECAM_GOAL else "NOT met"
            print(f"  {method:<21} {ratios[method]:.2f}x  {verdict}")

    if args.markdown:
        print()
        print("| method | ours median ms | peer median ms | ours/peer | ours peak MiB | peer peak MiB | agreement |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for method in methods:
            t, mem = times[method], memory.get(method, {})
            print(
                f"| {method} vs {PEER_NAMES[method]} | {statistics.median(t['ours']):.1f} | "
                f"{statistics.median(t['peer']):.1f} | {ratios[method]:.2f}x | "
                f"{_mib(mem.get('ours'), args.no_memory)} | {_mib(mem.get('peer'), args.no_memory)} | "
                f"{agreement[method]} |"
            )


if __name__ == "__main__":
    main()
