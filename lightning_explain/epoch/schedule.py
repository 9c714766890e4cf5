"""Which of ExplainCallback's methods run at an epoch, on how many probe images, and how long each stage took.

1. :func:`split_method_options` splits ``method_options`` into each method's schedule and its own options;
2. :func:`due_groups` picks the methods due at an epoch, grouped by how many probe images they explain (one
   :func:`~lightning_explain.functional.explain` call per group), largest group first.

Example:
    >>> schedule, options = split_method_options(("gradcam", "smoothgrad"), {"smoothgrad": {"samples": 4}}, 1)
    >>> schedule
    {'gradcam': (1, None), 'smoothgrad': (1, 4)}
    >>> due_groups(("gradcam", "smoothgrad"), schedule, epoch=3, probe_size=16)
    [(None, ['gradcam']), (4, ['smoothgrad'])]
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from lightning_explain.epoch.checks import check_int
from lightning_explain.functional import EXPENSIVE_METHODS, METHOD_OPTIONS, canonical_methods, check_options

__all__ = ["EXPENSIVE_MAX_IMAGES", "SCHEDULE_OPTIONS", "Schedule", "StageClock", "due_groups", "split_method_options"]

#: Per-method schedule options, besides each method's own (``METHOD_OPTIONS``).
SCHEDULE_OPTIONS = frozenset({"every_n_epochs", "max_images"})
#: Probe images an expensive method explains unless ``method_options`` says otherwise.
EXPENSIVE_MAX_IMAGES = 4


class StageClock(dict[str, float]):
    """Seconds per stage of one explained epoch on the training thread, summed over each ``stage(name)`` block.

    Example:
        >>> clock = StageClock()
        >>> with clock.stage("maps"):
        ...     pass
        >>> list(clock)
        ['maps']
    """

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


#: Per method: ``(every_n_epochs, max_images or None)``.
Schedule = dict[str, tuple[int, int | None]]


def split_method_options(
    methods: tuple[str, ...], options: Mapping[str, Mapping[str, Any]] | None, every_n_epochs: int
) -> tuple[Schedule, dict[str, dict[str, Any]]]:
    """``method_options`` -> (schedule per method: (every_n_epochs, max_images or None), functional options)."""
    chosen = {canonical_methods(m)[0]: dict(o) for m, o in (options or {}).items()}
    stray = sorted(set(chosen) - set(methods))
    if stray:
        raise ValueError(f"method_options names {stray}, which are not in methods={list(methods)}.")
    schedule: Schedule = {}
    functional: dict[str, dict[str, Any]] = {}
    for method in methods:
        opts = chosen.get(method, {})
        own = METHOD_OPTIONS.get(method, frozenset())
        unknown = set(opts) - SCHEDULE_OPTIONS - own
        if unknown:
            allowed = sorted(SCHEDULE_OPTIONS | own)
            raise ValueError(f"method_options[{method!r}] has unknown keys {sorted(unknown)}; allowed: {allowed}.")
        every = opts.pop("every_n_epochs", every_n_epochs)
        limit = opts.pop("max_images", EXPENSIVE_MAX_IMAGES if method in EXPENSIVE_METHODS else None)
        for name, value in (("every_n_epochs", every), ("max_images", limit)):
            if value is not None:
                check_int(f"method_options[{method!r}][{name!r}]", value)
        schedule[method] = (every, limit)
        if opts:
            functional[method] = check_options({method: opts})[method]
    return schedule, functional


def due_groups(
    methods: Sequence[str], schedule: Schedule, epoch: int | None, probe_size: int
) -> list[tuple[int | None, list[str]]]:
    """The methods due at ``epoch`` (None: all, e.g. under ``validate()``), grouped by ``max_images``.

    Largest group first: its logits and targets give the captions of every grid.
    """
    groups: dict[int | None, list[str]] = {}
    for method in methods:
        every, limit = schedule[method]
        if epoch is None or epoch % every == 0:
            groups.setdefault(limit, []).append(method)
    return sorted(groups.items(), key=lambda kv: -(kv[0] or probe_size))
