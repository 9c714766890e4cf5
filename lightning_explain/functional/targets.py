"""What a pass explains: the model's output read as ``[B, C]`` logits, and the score per image to differentiate.

Targets are None (the predicted class), an int (one class for all), a tensor with one class index per image, or a
callable from logits ``[B, C]`` to scores ``[B]``. One range check (:func:`check_classes`) serves every method.
No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from lightning_explain.functional.context import eager_only, model_dtype

__all__ = [
    "OutputTransform",
    "TargetSpec",
    "Targets",
    "check_classes",
    "class_indices",
    "logits_from_output",
    "resolve_targets",
    "select_scores",
    "target_scores",
]

Targets: TypeAlias = "int | Tensor | Callable[[Tensor], Tensor] | None"
OutputTransform: TypeAlias = "Callable[[Any], Tensor] | None"


def logits_from_output(output: Any, output_transform: OutputTransform = None) -> Tensor:
    """Turn a model's output into ``[B, C]`` logits.

    Tensors pass through; objects with a ``.logits`` tensor (Hugging Face ``ModelOutput``) give that. Anything
    else needs ``output_transform``.
    """
    if output_transform is not None:
        output = output_transform(output)
    elif not isinstance(output, Tensor) and isinstance(getattr(output, "logits", None), Tensor):
        output = output.logits
    if not isinstance(output, Tensor) or output.ndim != 2:
        what = f"a tensor of shape {list(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"the model returned {what}; explanations need [B, C] class scores (logits). Pass "
            "output_transform=<callable mapping the model output to [B, C] logits>, e.g. "
            "output_transform=lambda out: out[0] for a model that returns (logits, aux)."
        )
    return output


def class_indices(targets: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """One class index per sample ``[B]`` from an int or a tensor of indices (see :func:`check_classes`)."""
    if isinstance(targets, int) and not isinstance(targets, bool):
        return torch.full((batch,), targets, dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        index = targets.to(device=device, dtype=torch.long).reshape(-1)
        if index.numel() != batch:
            raise ValueError(f"targets has {index.numel()} class indices for a batch of {batch}: give one per sample.")
        # Indices made under trainer.validate()'s inference mode cannot enter a graph; a copy made here can.
        return index.clone() if index.is_inference() and not torch.is_inference_mode_enabled() else index
    raise TypeError(
        f"targets must be None, an int, a tensor of class indices or a callable; got {type(targets).__name__}."
    )


def check_classes(index: Tensor, num_classes: int) -> Tensor:
    """``index`` unchanged when every class index lies in ``[0, num_classes)``; else a ValueError that says so."""
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_classes):
        raise ValueError(
            f"target class indices must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs; "
            f"got {index.tolist()}."
        )
    return index


@dataclass(frozen=True)
class TargetSpec:
    """Resolved targets: a class index per image, or a callable from logits to per-row scores."""

    classes: Tensor | None
    fn: Callable[[Tensor], Tensor] | None = None

    def scores(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Scores of ``logits`` whose row ``r`` belongs to image ``rows[r]``."""
        return select_scores(logits, self, rows)[0]


def select_scores(logits: Tensor, targets: Targets | TargetSpec, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-row scores to explain, and the class index per row (-1 where a callable chose the score).

    ``targets`` is a :data:`Targets` value (one class or score per row of ``logits``) or a :class:`TargetSpec`
    whose classes are per image, with ``rows`` saying which image each row of ``logits`` belongs to (batched
    perturbations of the same images). A callable must return one score per row.
    """
    batch, num_classes = logits.shape
    if isinstance(targets, TargetSpec):
        targets = targets.fn if targets.fn is not None else targets.classes
        if isinstance(targets, Tensor) and rows is not None:
            targets = targets[rows.to(targets.device)]
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(logits)
        if not isinstance(scores, Tensor) or scores.shape != (batch,):
            got = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"a targets callable must return one score per sample, shape [{batch}]; got {got}.")
        return scores, torch.full((batch,), -1, dtype=torch.long, device=logits.device)
    index = logits.detach().argmax(dim=1) if targets is None else class_indices(targets, batch, logits.device)
    check_classes(index, num_classes)
    return logits.gather(1, index[:, None]).squeeze(1), index


def target_scores(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Per-sample scores to explain, and the class index per sample (-1 where a callable chose the score)."""
    return select_scores(logits, targets)


def resolve_targets(
    model: nn.Module, inputs: Tensor, targets: Targets, output_transform: OutputTransform = None
) -> TargetSpec:
    """Turn ``targets`` into a :class:`TargetSpec`; only ``None`` costs a (no-grad) forward, for the predictions.

    Class indices are checked against the model's number of outputs when the first scores are taken.
    """
    if callable(targets) and not isinstance(targets, Tensor):
        return TargetSpec(None, targets)
    if targets is None:
        with torch.inference_mode(False), torch.no_grad(), eager_only():
            logits = logits_from_output(model(inputs.detach().clone().to(model_dtype(model))), output_transform)
        return TargetSpec(logits.argmax(dim=1))
    classes = class_indices(targets, inputs.shape[0], inputs.device)
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError(f"target class indices must be >= 0; got {classes.tolist()}.")
    return TargetSpec(classes)
