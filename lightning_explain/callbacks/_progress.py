"""Progress bars for a view's long work, beside the Trainer's own bar, and none when the Trainer shows none.

:func:`trainer_reporter` picks how :func:`lightning_explain.functional.progress.task` loops are shown: through the
``RichProgressBar``'s live display when the Trainer uses it, as tqdm bars (cleared when done) with any other enabled
progress bar, and not at all without one (``enable_progress_bar=False``). A bar appears only once its task has run
for :data:`~lightning_explain.functional.progress.DELAY` seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lightning_explain.functional import progress
from lightning_explain.functional.progress import Bar, Reporter, TqdmReporter

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["trainer_reporter"]


def trainer_reporter(trainer: pl.Trainer, view: str) -> Reporter | None:
    """The reporter for ``view``'s tasks under ``trainer``'s progress bar (None: the Trainer shows none)."""
    bar = trainer.progress_bar_callback
    if bar is None or not getattr(bar, "is_enabled", True):
        return None
    if hasattr(bar, "progress"):  # RichProgressBar: its rich.progress.Progress while it is running
        live = bar.progress
        return _RichReporter(live, f"{view}: ") if callable(getattr(live, "add_task", None)) else None
    return TqdmReporter(prefix=f"{view}: ")  # TQDMProgressBar, or a custom bar: a tqdm bar beside it


class _RichReporter:
    def __init__(self, live: Any, prefix: str) -> None:
        self.live, self.prefix = live, prefix

    def start(self, description: str, total: int) -> Bar:
        return _RichBar(self.live, f"{self.prefix}{description}", total)


class _RichBar:
    """A task of the Rich display, added once the work has run for ``DELAY`` seconds and removed when it ends."""

    def __init__(self, live: Any, description: str, total: int) -> None:
        self.live, self.description, self.total = live, description, total
        self.started = time.monotonic()
        self.done = 0
        self.task: Any = None

    def update(self, n: int) -> None:
        self.done += n
        if self.task is None and time.monotonic() - self.started >= progress.DELAY:
            self.task = self.live.add_task(self.description, total=self.total, completed=self.done)
        elif self.task is not None:
            self.live.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.task is not None:
            self.live.remove_task(self.task)
            self.task = None
