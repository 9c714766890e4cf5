"""Can the maps be trusted? Sanity, robustness and complexity of the maps on the probe, for
:class:`~lightning_explain.ExplainCallback` (``trust=...``).

:class:`Trust` holds the options (validated once, in the callback's ``__init__``), says when it is due and turns an
epoch's maps into per-image values keyed by logged tag, through the pure functions of
:mod:`lightning_explain.functional.trust`. The callback gives it a function that explains one method on a given
model (the randomised copies included). No Lightning import.

Example:
    >>> spec = Trust.from_option({"every_n_epochs": 2, "samples": 2})
    >>> spec.samples, spec.due(4), spec.due(5), Trust.from_option(False)
    (2, True, False, None)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain.epoch.checks import check_int
from lightning_explain.functional import LAYER_METHODS, canonical_methods
from lightning_explain.functional.engine import ExplainResult, explain
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.functional.trust import (
    ExplainFn,
    complexity,
    faithfulness_correlation,
    model_randomisation,
    random_logit,
    sensitivity,
    sparseness,
)

__all__ = ["TRUST_NAMES", "TRUST_TESTS", "Trust", "method_explainer", "sanity_warning"]

#: The groups of values that ``tests`` can choose from.
TRUST_TESTS = ("randomisation", "random_logit", "sensitivity", "complexity", "faithfulness_correlation")
#: The values logged per method under ``{prefix}/{method}/trust/``, by group.
TRUST_NAMES: dict[str, tuple[str, ...]] = {
    "randomisation": ("mprt_spearman_top", "mprt_spearman", "mprt_ssim"),
    "random_logit": ("random_logit_spearman", "random_logit_ssim"),
    "sensitivity": ("max_sensitivity", "avg_sensitivity"),
    "complexity": ("sparseness", "complexity"),
    "faithfulness_correlation": ("faithfulness_correlation",),
}


@dataclasses.dataclass(frozen=True)
class Trust:
    """What ``ExplainCallback(trust=...)`` computes for each single-map method on the first ``max_images`` probe
    images, every ``every_n_epochs`` (see :mod:`~lightning_explain.functional.trust`).

    Attributes:
        every_n_epochs: how often (always under ``validate()``).
        max_images: probe images scored.
        methods: the methods scored (default: every single-map method of the callback).
        tests: the groups from :data:`TRUST_TESTS` (default: all).
        mprt_steps: points of the cascade measured (2: after re-initialising the top module, logged as
            ``mprt_spearman_top``, and after all, ``mprt_spearman`` / ``mprt_ssim``).
        seed: seeds the re-initialisation and every private generator.
        samples: noisy copies for max/avg sensitivity; ``radius``: the uniform noise's half-width (input units).
        runs: random pixel subsets for faithfulness correlation; ``subset``: their size (a fraction of the pixels
            or a count); ``baseline``: what removed pixels become (a number, or ``"black"``: each image's minimum).
        sanity_threshold: a method whose median ``mprt_spearman`` (every module re-initialised) stays above this
            fails the sanity check: the callback warns once.
    """

    every_n_epochs: int = 5
    max_images: int = 4
    methods: tuple[str, ...] | None = None
    tests: tuple[str, ...] = TRUST_TESTS
    mprt_steps: int = 2
    seed: int = 42
    samples: int = 4
    radius: float = 0.02
    runs: int = 16
    subset: float = 0.1
    baseline: float | str = "black"
    sanity_threshold: float = 0.5

    @classmethod
    def from_option(cls, option: bool | Mapping[str, Any]) -> Trust | None:
        """None for ``False``; the defaults for ``True``; a dict overrides them (unknown keys raise)."""
        if option is False:
            return None
        given = {} if option is True else dict(option) if isinstance(option, Mapping) else {"": option}
        fields = [f.name for f in dataclasses.fields(cls)]
        if set(given) - set(fields):
            raise ValueError(f"trust must be True, False or a dict with keys from {fields}; got {option!r}.")
        if given.get("methods") is not None:
            given["methods"] = tuple(canonical_methods(given["methods"]))
        if "tests" in given:
            tests = (given["tests"],) if isinstance(given["tests"], str) else tuple(given["tests"])
            if not tests or set(tests) - set(TRUST_TESTS):
                raise ValueError(f"trust['tests'] must be a non-empty subset of {TRUST_TESTS}; got {given['tests']!r}.")
            given["tests"] = tests
        spec = cls(**given)
        for name in ("every_n_epochs", "max_images", "mprt_steps", "samples", "runs"):
            check_int(f"trust[{name!r}]", getattr(spec, name))
        if not (isinstance(spec.radius, int | float) and spec.radius > 0):
            raise ValueError(f"trust['radius'] must be a number > 0; got {spec.radius!r}.")
        if not (isinstance(spec.subset, int | float) and spec.subset > 0):
            raise ValueError(f"trust['subset'] must be a fraction in (0, 1) or a pixel count; got {spec.subset!r}.")
        if not (spec.baseline == "black" or isinstance(spec.baseline, int | float)):
            raise ValueError(f"trust['baseline'] must be a number or 'black'; got {spec.baseline!r}.")
        if not (isinstance(spec.sanity_threshold, int | float) and -1 <= spec.sanity_threshold <= 1):
            raise ValueError(f"trust['sanity_threshold'] must lie in [-1, 1]; got {spec.sanity_threshold!r}.")
        return spec

    def due(self, epoch: int, fitting: bool = True) -> bool:
        """Whether it runs at ``epoch``: every ``every_n_epochs`` while fitting, always under ``validate()``."""
        return not fitting or epoch % self.every_n_epochs == 0

    def score(
        self,
        model: nn.Module,
        images: Tensor,
        result: ExplainResult,
        prefix: str,
        transform: OutputTransform,
        explain_fn: Callable[[str], ExplainFn],
    ) -> dict[str, Tensor]:
        """Per-image values keyed by logged tag: ``{prefix}/{method}/trust/{name}``.

        ``explain_fn(method)`` gives ``(model, inputs, classes) -> maps`` for that method, as the epoch's maps were
        made. NaN where a targets callable chose the score (no class to explain again).
        """
        methods = [m for m in (self.methods or result.maps) if m in result and result[m].dim() == 3]
        n = min([self.max_images, len(result.targets)] + [result[m].shape[0] for m in methods])
        x = images[:n].to(result.logits.device)
        if not x.is_floating_point():
            raise TypeError(f"trust needs floating-point probe images; these have dtype {x.dtype}.")
        classes = result.targets[:n]
        chosen = classes.clamp_min(0)
        out: dict[str, Tensor] = {}
        for method in methods:
            fn, maps = explain_fn(method), result[method][:n].float()
            values: dict[str, Tensor] = {}
            if "randomisation" in self.tests:
                cascade = model_randomisation(fn, model, x, chosen, maps, steps=self.mprt_steps, seed=self.seed)
                first, last = next(iter(cascade.values())), list(cascade.values())[-1]
                values.update(
                    mprt_spearman_top=first["spearman"], mprt_spearman=last["spearman"], mprt_ssim=last["ssim"]
                )
            if "random_logit" in self.tests and result.logits.shape[1] > 1:
                other = random_logit(fn, model, x, chosen, maps, int(result.logits.shape[1]), seed=self.seed)
                values.update(random_logit_spearman=other["spearman"], random_logit_ssim=other["ssim"])
            if "sensitivity" in self.tests:
                values.update(
                    sensitivity(fn, model, x, chosen, maps, samples=self.samples, radius=self.radius, seed=self.seed)
                )
            if "complexity" in self.tests:
                values.update(sparseness=sparseness(maps), complexity=complexity(maps))
            if "faithfulness_correlation" in self.tests:
                subset = int(self.subset) if self.subset >= 1 else float(self.subset)
                values["faithfulness_correlation"] = faithfulness_correlation(
                    model, x, maps, chosen, runs=self.runs, subset=subset, baseline=self.baseline, seed=self.seed,
                    output_transform=transform,
                )  # fmt: skip
            for name, value in values.items():
                value = value.to(classes.device)
                out[f"{prefix}/{method}/trust/{name}"] = torch.where(classes >= 0, value, float("nan"))
        return out

    def failures(self, values: Mapping[str, float], prefix: str) -> dict[str, float]:
        """The methods whose median ``mprt_spearman`` in ``values`` (summarised tags) is above the threshold."""
        suffix = "/trust/mprt_spearman"
        return {
            key[len(prefix) + 1 : -len(suffix)]: value
            for key, value in values.items()
            if key.startswith(f"{prefix}/") and key.endswith(suffix)
            and not math.isnan(value) and value > self.sanity_threshold
        }  # fmt: skip


def method_explainer(
    model: nn.Module,
    layer: str | None,
    *,
    top_k: int,
    output_transform: OutputTransform,
    options: Mapping[str, Mapping[str, Any]],
    layer_layout: str | None,
) -> Callable[[str], ExplainFn]:
    """``method -> (model, inputs, classes) -> maps``: one method's maps as the callback makes them, on any model.

    The layer is passed as the module object of ``model`` (resolved once), so that a randomised stand-in that calls
    ``model`` (:func:`~lightning_explain.functional.trust.randomised`) finds it too.
    """
    module = model.get_submodule(layer) if layer is not None else None

    def for_method(method: str) -> ExplainFn:
        def fn(m: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
            opts = {method: options[method]} if method in options else None
            target = module if method in LAYER_METHODS else None
            out = explain(
                m, x, target, (method,), classes, top_k=top_k, output_transform=output_transform, options=opts,
                layer_layout=layer_layout if target is not None else None,
            )  # fmt: skip
            return out[method]

        return fn

    return for_method


def sanity_warning(method: str, value: float, threshold: float, epoch: int) -> str:
    """The one warning for a method that fails the model-randomisation sanity check."""
    return (
        f"ExplainCallback: {method} fails the model-randomisation sanity check at epoch {epoch}: with every layer "
        f"re-initialised its map still correlates with the trained model's (median Spearman {value:.2f} > "
        f"{threshold}). Its maps show the input more than what the model learned (Adebayo et al. 2018); read them "
        "with care. Shown once per method; the values are logged under .../trust/."
    )
