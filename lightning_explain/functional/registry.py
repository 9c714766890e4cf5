"""The method names :func:`~lightning_explain.functional.explain` accepts, how they group, and their options.

No Lightning import, no tensors: the single place that says which methods exist, which share the one hooked
pass, which need extra passes, and which options each takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning_explain.functional.cams import CAM_METHODS

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "INPUT_GRAD_METHODS",
    "LAYER_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "canonical_methods",
    "check_options",
]

#: Method names accepted by :func:`explain` (and ``ExplainCallback(methods=...)``).
METHODS: tuple[str, ...] = (
    *CAM_METHODS,
    "scorecam",
    "saliency",
    "gradxinput",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "lime",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "lrp_epsilon",
    "lrp_epsilon_plus_flat",
    "lrp_epsilon_gamma_box",
    "lrp_alpha_beta",
    "activations",
    "attention",
    "rollout",
    "grad_rollout",
)
#: What :func:`explain` and the callback compute when not told otherwise: cheap, one pass.
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "saliency", "activations")
#: Methods that need extra passes (their cost grows with channels, samples, steps or windows).
EXPENSIVE_METHODS: tuple[str, ...] = (
    "scorecam",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "lime",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "lrp_epsilon",
    "lrp_epsilon_plus_flat",
    "lrp_epsilon_gamma_box",
    "lrp_alpha_beta",
)
#: Options each expensive method takes in ``explain(options={method: {...}})``.
METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "scorecam": frozenset({"batch_size", "precision"}),
    "smoothgrad": frozenset({"samples", "noise_level", "seed", "internal_batch_size"}),
    "integrated_gradients": frozenset({"steps", "method", "baseline", "internal_batch_size"}),
    "occlusion": frozenset({"window", "stride", "baseline", "batch_size", "precision"}),
    "lime": frozenset(
        {"segments", "segmentation", "compactness", "samples", "kernel_width", "ridge", "baseline", "seed"}
        | {"batch_size", "precision"}
    ),
    "lrp_epsilon": frozenset({"epsilon", "stabilizer"}),
    "lrp_epsilon_plus_flat": frozenset({"epsilon", "stabilizer"}),
    "lrp_epsilon_gamma_box": frozenset({"epsilon", "stabilizer", "gamma", "low", "high"}),
    "lrp_alpha_beta": frozenset({"epsilon", "stabilizer"}),
    "attention": frozenset({"layer"}),
    "rollout": frozenset({"head_fusion", "discard_ratio"}),
}
#: Methods that read a vision transformer's attention weights.
ATTENTION_METHODS: tuple[str, ...] = ("attention", "rollout", "grad_rollout")
#: Methods that read the target layer.
LAYER_METHODS = frozenset({*CAM_METHODS, "scorecam", "guided_gradcam", "activations"})
#: Methods from the one pass's input gradient.
INPUT_GRAD_METHODS = frozenset({"saliency", "gradxinput"})
_ALIASES = {
    "gradcam++": "gradcampp",
    "ig": "integrated_gradients",
    "gradient_x_input": "gradxinput",
    "guided_backpropagation": "guided_backprop",
    "deconvolution": "deconvnet",
    "guided_grad_cam": "guided_gradcam",
    "lrp": "lrp_epsilon_plus_flat",
    "lrp_alpha2_beta1": "lrp_alpha_beta",
}


def canonical_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Validate method names (aliases like ``"gradcam++"`` accepted), in order, without duplicates.

    Example:
        >>> canonical_methods(["gradcam++", "ig", "gradcampp"])
        ('gradcampp', 'integrated_gradients')
    """
    if isinstance(methods, str):
        methods = (methods,)
    names = [_ALIASES.get(m, m) for m in methods]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}; got {list(methods)}.")
    return tuple(dict.fromkeys(names))


def check_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate per-method options against :data:`METHOD_OPTIONS`."""
    checked: dict[str, dict[str, Any]] = {}
    for method, opts in (options or {}).items():
        name = _ALIASES.get(method, method)
        allowed = METHOD_OPTIONS.get(name)
        if allowed is None:
            raise ValueError(f"options are for {sorted(METHOD_OPTIONS)}; got options for {method!r}.")
        unknown = set(opts) - allowed
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for {name!r}; allowed: {sorted(allowed)}.")
        checked[name] = dict(opts)
    return checked
