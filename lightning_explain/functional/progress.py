"""Progress of long work (Score-CAM's masked passes, SmoothGrad's samples, TCAV, inversion...), shown only on request.

The functions of :mod:`lightning_explain.functional` announce their loops with :func:`task`; nothing is printed
unless a caller installed a :class:`Reporter` with :func:`reporting` (the callbacks install one that draws a bar
beside the Trainer's own progress bar, and none when the Trainer's bar is off). A task without a reporter costs a
context-variable read. No Lightning import.

Example:
    >>> seen = []
    >>> class Record:
    ...     def start(self, description, total):
    ...         seen.append((description, total))
    ...         return Bar()
    >>> class Bar:
    ...     def update(self, n): seen.append(n)
    ...     def close(self): seen.append("closed")
    >>> with reporting(Record()):
    ...     with task("scorecam", total=2) as bar:
    ...         bar.update(); bar.update()
    >>> seen
    [('scorecam', 2), 1, 1, 'closed']
    >>> with task("nobody listens", total=3) as bar:  # no reporter: a no-op
    ...     bar.update()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["DELAY", "Bar", "Reporter", "TqdmReporter", "current_reporter", "reporting", "task"]

#: Seconds a task runs before its bar appears (short work shows nothing).
DELAY = 2.0


class Bar(Protocol):
    """One running task's display."""

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Starts a :class:`Bar` for a task of ``total`` units."""

    def start(self, description: str, total: int) -> Bar: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Task:
    """What :func:`task` yields: ``update(n=1)`` advances the bar (if any)."""

    def __init__(self, bar: Bar) -> None:
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)


class TqdmReporter:
    """One tqdm bar per task on stderr, shown after ``delay`` seconds and removed when the task ends."""

    def __init__(self, delay: float | None = None, prefix: str = "") -> None:
        self.delay = DELAY if delay is None else delay
        self.prefix = prefix

    def start(self, description: str, total: int) -> Bar:
        from tqdm.auto import tqdm

        return tqdm(  # type: ignore[no-any-return]
            total=total, desc=f"{self.prefix}{description}", leave=False, delay=self.delay, dynamic_ncols=True
        )


_REPORTER: ContextVar[Reporter | None] = ContextVar("lightning_explain_progress", default=None)


def current_reporter() -> Reporter | None:
    """The reporter installed by the innermost :func:`reporting`, or None."""
    return _REPORTER.get()


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Show the :func:`task` calls made inside the block through ``reporter`` (None: show nothing)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


@contextmanager
def task(description: str, total: int) -> Iterator[_Task]:
    """A loop of ``total`` units of work; its bar (if a reporter listens) is removed when the block ends."""
    reporter = _REPORTER.get()
    bar: Bar = _Silent() if reporter is None else reporter.start(description, max(int(total), 1))
    try:
        yield _Task(bar)
    finally:
        bar.close()
