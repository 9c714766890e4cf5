"""The callbacks' long error and warning texts: each names what happened, why, and what to do."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_explain.functional.target_layer import LayerChoice

__all__ = [
    "NO_LABELS_ERROR",
    "NO_VALIDATION_ERROR",
    "NO_VALIDATION_WARNING",
    "coarse_warning",
    "flat_warning",
    "nonfinite_warning",
]

#: ExplainCallback without validation data: with no probe (an error), with a probe (a warning).
NO_VALIDATION_ERROR = (
    "ExplainCallback found no validation data and no probe: it explains a probe batch at the end of each validation "
    "epoch. Give the Trainer validation data (a validation_step and val_dataloaders=... or a val_dataloader() hook, "
    "limit_val_batches > 0)."
)
NO_LABELS_ERROR = (
    "targets='label' but the validation batches carry no class labels ([B] integers). Use targets='predicted', "
    "label_key=... for dict batches, or unpack_batch=<callable>."
)
NO_VALIDATION_WARNING = (
    "ExplainCallback runs at the end of validation epochs, but this fit has no validation loop (no validation_step, "
    "no val data, or limit_val_batches=0): it will log nothing."
)


def nonfinite_warning(view: str, bad: Sequence[int], epoch: int) -> str:
    """The one warning for maps that hold NaN or inf."""
    return (
        f"ExplainCallback: the {view} map of probe images {list(bad)} holds NaN or inf at epoch {epoch} (diverging "
        "weights or an overflow); those cells are shown blank and training continues."
    )


def flat_warning(flat: Sequence[str], layer: LayerChoice, epoch: int) -> str:
    """The one warning for maps that stay flat: which, where, why it happens and what to try."""
    return (
        f"ExplainCallback: the {list(flat)} maps are flat or not finite for every probe image at epoch {epoch} on "
        f"layer {layer.describe()}. The score does not depend on that layer's output yet (a zero-initialised "
        "branch, a class-token read-out) or the CAM's ReLU removes it all. If it stays flat, pass "
        "target_layer=<a later block: after the residual add, before global pooling>."
    )


def coarse_warning(layer: LayerChoice) -> str:
    """The one warning for a layer whose grid is too coarse for maps that say much: what, why, and a finer layer."""
    height, width = layer.layout.grid
    fix = (
        f"For finer maps pass target_layer={layer.finer.name!r} (a {layer.finer.layout.grid[0]} x "
        f"{layer.finer.layout.grid[1]} grid), or feed larger images."
        if layer.finer is not None
        else "For finer maps pass target_layer=<an earlier block>, or feed larger images."
    )
    return (
        f"ExplainCallback: layer {layer.name!r} has a {height} x {width} grid at this input size: every layer map is "
        f"{height * width} blobs, and the border numbers cannot move (border_lift is NaN when the border band covers "
        f"the whole grid). {fix}"
    )
