"""The method names :func:`~lightning_explain.functional.explain` accepts, how they group, and their options.

No Lightning import, no tensors. Each method is declared once, next to its math, as a
:class:`~lightning_explain.functional.spec.MethodSpec` in its family's ``SPECS`` tuple (``cams``,
``perturbation``, ``input_gradients``, ``lime``, ``guided``, ``lrp``, ``feature_maps``, ``rollout``), and this module
registers them (:func:`~lightning_explain.functional.spec.register_method`). Every table here is a view of the
registered specs, so a method registered later (by a user, or a test) appears in all of them at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_explain.functional import cams, feature_maps, guided, input_gradients, lime, lrp, perturbation, rollout
from lightning_explain.functional.spec import (
    MethodNames,
    MethodOptions,
    method_spec,
    register_method,
    registered_methods,
)

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "INPUT_GRAD_METHODS",
    "LAYER_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "PIXEL_METHODS",
    "canonical_methods",
    "check_options",
]

#: The families, in the order their methods are listed; each declares its methods in a ``SPECS`` tuple.
FAMILIES = (cams, perturbation, input_gradients, lime, guided, lrp, feature_maps, rollout)
for _family in FAMILIES:
    for _spec in _family.SPECS:
        register_method(_spec)

#: Method names accepted by :func:`explain` (and ``ExplainCallback(methods=...)``).
METHODS = MethodNames(lambda spec: True)
#: What :func:`explain` and the callback compute when not told otherwise: cheap, one pass.
DEFAULT_METHODS: tuple[str, ...] = tuple(spec.name for spec in registered_methods() if spec.default)
#: Methods that need extra passes (their cost grows with channels, samples, steps or windows).
EXPENSIVE_METHODS = MethodNames(lambda spec: spec.own_passes)
#: Options each method takes in ``explain(options={method: {...}})``, read from its spec's signature.
METHOD_OPTIONS = MethodOptions()
#: Methods that read a vision transformer's attention weights.
ATTENTION_METHODS = MethodNames(lambda spec: spec.attention)
#: Methods that read the target layer.
LAYER_METHODS = MethodNames(lambda spec: spec.needs_layer)
#: Methods from the one pass's input gradient.
INPUT_GRAD_METHODS = MethodNames(lambda spec: "input_grad" in spec.reads and not spec.own_passes)
#: Methods that differentiate or perturb the image itself: they need floating-point images.
PIXEL_METHODS = MethodNames(lambda spec: spec.pixels)


def canonical_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Validate method names (aliases like ``"gradcam++"`` accepted), in order, without duplicates.

    Example:
        >>> canonical_methods(["gradcam++", "ig", "gradcampp"])
        ('gradcampp', 'integrated_gradients')
    """
    if isinstance(methods, str):
        methods = (methods,)
    specs = [method_spec(m) for m in methods]
    if not specs or any(spec is None for spec in specs):
        known = [name for spec in registered_methods() for name in (spec.name, *spec.aliases)]
        unknown = [m for m, spec in zip(methods, specs, strict=True) if spec is None]
        close = {m: difflib.get_close_matches(m, known, n=1) for m in unknown}
        hint = "".join(f" Did you mean {c[0]!r} for {m!r}?" for m, c in close.items() if c)
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}; got {list(methods)}.{hint}")
    return tuple(dict.fromkeys(spec.name for spec in specs if spec is not None))


def check_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate per-method options against :data:`METHOD_OPTIONS` (each method's signature).

    Example:
        >>> check_options({"ig": {"steps": 8}})
        {'integrated_gradients': {'steps': 8}}
    """
    checked: dict[str, dict[str, Any]] = {}
    for method, opts in (options or {}).items():
        spec = method_spec(method)
        if spec is None or not spec.options:
            raise ValueError(f"options are for {sorted(METHOD_OPTIONS)}; got options for {method!r}.")
        unknown = set(opts) - spec.options
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for {spec.name!r}; allowed: {sorted(spec.options)}.")
        checked[spec.name] = dict(opts)
    return checked
