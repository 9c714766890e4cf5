"""Argument checks shared by every callback's ``__init__`` and setup: messages name the argument, the rule and the
value. No Lightning import (anything under ``lightning_explain.callbacks`` imports Lightning)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_explain.epoch.maps import TARGET_MODES
from lightning_explain.epoch.probe import Probe
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.layouts import LAYOUTS
from lightning_explain.output.render import valid_colormap

__all__ = [
    "check_display",
    "check_explain_arguments",
    "check_int",
    "check_positive_int",
    "check_probe_args",
    "check_probe_masks",
    "fail_softly",
    "is_int",
]


def is_int(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an ``int`` (``bool`` excluded) of at least ``minimum``.

    Example:
        >>> is_int(3), is_int(0), is_int(0, minimum=0), is_int(True), is_int(2.0)
        (True, False, True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_int(arg: str, value: Any, minimum: int = 1, why: str = "") -> None:
    """Raise ``"<arg> must be an integer >= <minimum><why>; got <value>."`` unless :func:`is_int` holds."""
    if not is_int(value, minimum):
        raise ValueError(f"{arg} must be an integer >= {minimum}{why}; got {value!r}.")


def check_positive_int(**values: Any) -> None:
    """Raise a ValueError naming the argument unless each value is an ``int >= 1``."""
    for arg, value in values.items():
        check_int(arg, value)


def check_display(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    colormap: str,
    cell_size: int,
    *,
    min_cell_size: int,
    alpha: float | None = None,
) -> None:
    """The rendering arguments: normalisation to undo, colour map, overlay opacity and cell size."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: pass both (to undo input normalisation) or neither.")
    if mean is not None and std is not None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}; give one per channel.")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0; got {list(std)}.")
    if not valid_colormap(colormap):
        raise ValueError(f"colormap {colormap!r} is not a matplotlib colour map (e.g. 'jet', 'viridis').")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
    if cell_size < min_cell_size:
        raise ValueError(f"cell_size must be >= {min_cell_size} pixels; got {cell_size}.")


def check_probe_args(probe: Tensor | None, probe_labels: Tensor | None, *, integer_ok: bool = False) -> None:
    """An explicit probe: float (with ``integer_ok`` also integer) images ``[N, C, H, W]``, at most one label each."""
    if probe is None:
        return
    check_inputs(probe, integer_ok=integer_ok)
    if probe_labels is not None and probe_labels.reshape(-1).shape[0] != probe.shape[0]:
        raise ValueError(f"probe_labels has {probe_labels.numel()} entries for {probe.shape[0]} images.")


def fail_softly(owner: str, view: str, err: Exception, epoch: int, *, strict: bool, warned: set[str]) -> None:
    """A failure inside one view mid-training: re-raise under ``strict``, else warn once per view and go on."""
    if strict:
        raise err
    if view in warned:
        return
    warned.add(view)
    warnings.warn(
        f"{owner}: {view} failed at epoch {epoch} ({type(err).__name__}: {err}). It is skipped and training "
        "continues; this warning is shown once. Pass strict=True to raise instead.",
        UserWarning,
        stacklevel=3,
    )


def check_explain_arguments(
    layer_layout: str | None,
    targets: str | int,
    border_fraction: float,
    probe: Tensor | None,
    probe_labels: Tensor | None,
    probe_masks: Mapping[str, Any],
) -> None:
    """ExplainCallback's own argument checks (those ViewCallback does not make), each error with its fix."""
    if layer_layout is not None and layer_layout not in LAYOUTS:
        raise ValueError(f"layer_layout must be one of {list(LAYOUTS)} or None; got {layer_layout!r}.")
    if not is_int(targets, minimum=0) and targets not in TARGET_MODES:
        raise ValueError(f"targets must be 'predicted', 'label' or a class index >= 0; got {targets!r}.")
    if targets == "label" and probe is not None and probe_labels is None:
        raise ValueError("targets='label' needs labels: pass probe_labels with the probe.")
    if not 0.0 < border_fraction < 0.5:
        raise ValueError(f"border_fraction must lie in (0, 0.5); got {border_fraction}.")
    if probe is None and any(m is not None for m in probe_masks.values()):
        raise ValueError(
            "probe_object_masks / probe_cue_masks go with an explicit probe=...; for validation data use "
            "object_mask_key / cue_mask_key."
        )


def check_probe_masks(probe: Probe) -> None:
    """Each mask of the probe is ``[N, H, W]``, the size of the probe images."""
    size = tuple(probe.images.shape[-2:])
    for name, mask in probe.masks.items():
        if tuple(mask.shape) != (len(probe), *size):
            raise ValueError(
                f"the probe's {name} masks have shape {list(mask.shape)}; they must be [N, H, W] = "
                f"{[len(probe), *size]}, the size of the probe images."
            )
