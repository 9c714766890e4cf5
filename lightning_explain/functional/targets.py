"""What a pass explains: the model's output read as ``[B, C]`` class scores (classification, dense segmentation,
Hugging Face and dict outputs), and the score per image to differentiate.

Targets are None (the predicted class), an int (one class for all), a tensor with one class index per image, or a
callable from logits ``[B, C]`` to scores ``[B]``. One range check (:func:`check_classes`) serves every method.
No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain.functional.context import as_model_input, eager_only

__all__ = [
    "LOGIT_KEYS",
    "ClassScores",
    "OutputTransform",
    "TargetSpec",
    "Targets",
    "check_classes",
    "class_indices",
    "logits_from_output",
    "read_output",
    "resolve_targets",
    "select_scores",
    "target_scores",
]

Targets: TypeAlias = "int | Tensor | Callable[[Tensor], Tensor] | None"
OutputTransform: TypeAlias = "Callable[[Any], Tensor] | None"


@dataclass(frozen=True)
class ClassScores:
    """A model's output read as class scores.

    Attributes:
        logits: ``[B, C]``. For a dense ``[B, C, H, W]`` output (segmentation), class ``c``'s score is the sum of
            its scores over the pixels predicted as ``c`` (pytorch-grad-cam's ``SemanticSegmentationTarget``).
        predicted: ``[B]`` the predicted class: the argmax, or for a dense output the class covering most pixels.
        dense: whether the output was dense.
    """

    logits: Tensor
    predicted: Tensor
    dense: bool = False


#: Keys of a dict output that hold the class scores, in the order they are tried.
LOGIT_KEYS = ("logits", "out")


def _describe(output: Any) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {list(output.shape)}"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {sorted(map(str, output))}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


def _hint(output: Any) -> str:
    if isinstance(output, Mapping) and output:
        return f'output_transform=lambda out: out["{next(iter(output))}"] for a dict output'
    return "output_transform=lambda out: out[0] for a model that returns (logits, aux)"


def read_output(output: Any, output_transform: OutputTransform = None) -> ClassScores:
    """Read a model's output as class scores (see :class:`ClassScores`).

    Understood without ``output_transform``: a ``[B, C]`` tensor; a dense ``[B, C, H, W]`` tensor; an object with a
    ``.logits`` tensor (Hugging Face ``ModelOutput``); a dict with a ``"logits"`` or ``"out"`` tensor (torchvision's
    segmentation models). An error raised inside ``output_transform`` is re-raised with what went in.

    Example:
        >>> dense = torch.zeros(1, 3, 2, 2); dense[0, 2, :, :1] = 1.0; dense[0, 1, 0, 1] = 2.0
        >>> scores = read_output({"out": dense})
        >>> scores.logits.tolist(), scores.predicted.tolist()
        ([[0.0, 2.0, 2.0]], [2])
    """
    given = output
    if output_transform is not None:
        try:
            output = output_transform(output)
        except Exception as err:
            raise ValueError(
                f"output_transform raised {type(err).__name__}: {err}; it was given {_describe(given)} (the model's "
                "output) and must return the [B, C] class scores (or [B, C, H, W] dense scores)."
            ) from err
    elif not isinstance(output, Tensor) and isinstance(getattr(output, "logits", None), Tensor):
        output = output.logits
    elif isinstance(output, Mapping):
        output = next((output[k] for k in LOGIT_KEYS if isinstance(output.get(k), Tensor)), output)
    if isinstance(output, Tensor) and output.ndim == 2:
        return ClassScores(output, output.detach().argmax(dim=1))
    if isinstance(output, Tensor) and output.ndim == 4:
        winner = output.detach().argmax(dim=1)  # [B, H, W]
        region = F.one_hot(winner, output.shape[1]).permute(0, 3, 1, 2).to(output.dtype)
        counts = region.flatten(2).sum(dim=2)
        return ClassScores((output * region).flatten(2).sum(dim=2), counts.argmax(dim=1), dense=True)
    raise ValueError(
        f"the model returned {_describe(output)}; explanations need [B, C] class scores (logits) or [B, C, H, W] "
        f"dense scores. Pass output_transform=<callable mapping the model output to them>, e.g. {_hint(output)}."
    )


def logits_from_output(output: Any, output_transform: OutputTransform = None) -> Tensor:
    """The ``[B, C]`` class scores of a model's output (:func:`read_output`)."""
    return read_output(output, output_transform).logits


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


def select_scores(
    logits: Tensor, targets: Targets | TargetSpec, rows: Tensor | None = None, predicted: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-row scores to explain, and the class index per row (-1 where a callable chose the score).

    ``targets=None`` explains ``predicted`` (default: the argmax of ``logits``).

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
    if targets is None:
        index = logits.detach().argmax(dim=1) if predicted is None else predicted
    else:
        index = class_indices(targets, batch, logits.device)
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
            scores = read_output(model(as_model_input(inputs, model)), output_transform)
        return TargetSpec(scores.predicted)
    classes = class_indices(targets, inputs.shape[0], inputs.device)
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError(f"target class indices must be >= 0; got {classes.tolist()}.")
    return TargetSpec(classes)
