"""Reading a view's state back from a checkpoint: older releases' checkpoints, and malformed or missing state.

Lightning calls a callback's ``load_state_dict`` at the start of ``fit(..., ckpt_path=...)``. The functions here read
the state a view keeps (the probe, the map history, FocusAlert's counters) and raise :class:`StateProblem`, naming
what is wrong, instead of failing later deep inside the view; the views then warn and take a fresh probe, or raise
a clear error under ``strict=True`` (:func:`state_message`). A key that is missing takes its default: checkpoints of
earlier releases load. (A checkpoint without any state for a callback, written before it was added, never reaches
``load_state_dict``: Lightning skips the call, and the view reads a fresh probe.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_explain.epoch.probe import Probe

__all__ = ["StateProblem", "focus_alert_state", "map_history_state", "probe_state", "state_message"]


class StateProblem(ValueError):
    """A callback's state in a checkpoint is malformed; the message says what."""


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StateProblem(f"{what} is a {type(value).__name__}, not a dict")
    return value


def probe_state(state: Any) -> Probe | None:
    """The probe kept in a view's state (``probe_images``, ``probe_labels``, ``probe_masks``), or None without one.

    Raises:
        StateProblem: ``probe_images`` is not a ``[N, C, H, W]`` tensor, the labels are not ``[N]`` integers, or a
            mask is not ``[N, H, W]`` at the images' size.

    Example:
        >>> probe_state({"probe_images": torch.zeros(2, 3, 8, 8), "probe_labels": torch.tensor([0, 1])}).images.shape
        torch.Size([2, 3, 8, 8])
        >>> probe_state({"probe_images": torch.zeros(3, 8, 8)})
        Traceback (most recent call last):
        ...
        lightning_explain.epoch.restore.StateProblem: probe_images has shape (3, 8, 8), not [N, C, H, W]
    """
    state = _mapping(state, "the state")
    images = state.get("probe_images")
    if images is None:
        return None
    if not isinstance(images, Tensor):
        raise StateProblem(f"probe_images is a {type(images).__name__}, not a tensor")
    if images.ndim != 4 or images.shape[0] == 0:
        raise StateProblem(f"probe_images has shape {tuple(images.shape)}, not [N, C, H, W]")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise StateProblem(f"probe_images has dtype {images.dtype}, not a float or uint8 type")
    count, size = int(images.shape[0]), tuple(images.shape[-2:])
    labels = state.get("probe_labels")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
            raise StateProblem(f"probe_labels is a {_describe(labels)}, not a tensor of class indices")
        if tuple(labels.shape) != (count,):
            raise StateProblem(f"probe_labels has shape {tuple(labels.shape)}, not [{count}] for {count} images")
        labels = labels.cpu()
    masks: dict[str, Tensor] = {}
    raw_masks = state.get("probe_masks")
    for name, mask in _mapping({} if raw_masks is None else raw_masks, "probe_masks").items():
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (count, *size):
            raise StateProblem(
                f"probe mask {name!r} is a {_describe(mask)}, not [{count}, {size[0]}, {size[1]}] like the images"
            )
        masks[str(name)] = mask.cpu()
    return Probe(images.cpu(), labels, masks)


def map_history_state(state: Any, count: int | None) -> dict[str, dict[str, Tensor]]:
    """ExplainCallback's ``map_history`` (``first`` and ``previous`` maps, method -> ``[N, h, w]``), checked against a
    probe of ``count`` images (None: no probe, so no history is kept).

    Raises:
        StateProblem: a part is not a dict of ``[N, h, w]`` tensors with ``N`` the probe's size.
    """
    history = _mapping(state if state is not None else {}, "map_history")
    out: dict[str, dict[str, Tensor]] = {}
    for part in ("first", "previous"):
        raw = history.get(part)
        maps = _mapping({} if raw is None else raw, f"map_history[{part!r}]")
        for method, value in maps.items():
            if not isinstance(value, Tensor) or value.ndim != 3 or (count is not None and value.shape[0] != count):
                expected = f"[{count if count is not None else 'N'}, h, w]"
                raise StateProblem(f"map_history[{part!r}][{method!r}] is a {_describe(value)}, not {expected}")
        out[part] = {str(k): v.cpu() for k, v in maps.items()} if count is not None else {}
    return out


def focus_alert_state(state: Any) -> tuple[int | None, int, list[dict[str, Any]]]:
    """FocusAlert's ``fired_epoch``, ``bad_epochs`` and ``history`` (defaults for missing keys).

    Raises:
        StateProblem: one of them has the wrong type.
    """
    state = _mapping(state, "the state")
    fired, bad, history = state.get("fired_epoch"), state.get("bad_epochs", 0), state.get("history", [])
    if fired is not None and not _is_int(fired):
        raise StateProblem(f"fired_epoch is a {_describe(fired)}, not an epoch number or None")
    if not _is_int(bad) or bad < 0:
        raise StateProblem(f"bad_epochs is {_describe(bad)}, not a count")
    if not isinstance(history, (list, tuple)) or not all(isinstance(item, Mapping) for item in history):
        raise StateProblem(f"history is a {_describe(history)}, not a list of dicts")
    return (None if fired is None else int(fired)), int(bad), [dict(item) for item in history]


def state_message(owner: str, problem: Exception, *, strict: bool, fresh: str) -> str:
    """The warning (or, with ``strict``, the error) for a malformed state: the problem, and what happens instead."""
    if strict:
        return (
            f"{owner} cannot resume from this checkpoint: its state for {owner} is malformed ({problem}). Resume "
            f"with strict=False to start {fresh} instead, or from another checkpoint."
        )
    return f"{owner}: its state in the checkpoint is malformed ({problem}); ignoring it and starting {fresh}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} ({value!r:.60})"
