"""Every ```python block of the documentation (docs/**/*.md and README.md) runs, so no example rots.

The blocks of a page run in order in one namespace, in a temporary working directory. A page may use ``model`` and
``datamodule`` without defining them, as a user's own would be: they are a tiny CNN and a small
``ShortcutShapesDataModule``. Every ``Trainer`` the examples build runs one short epoch on the CPU (2 training
batches, 1 validation batch), whatever the example asks, so the examples stay cheap.

A block that cannot run (a signature listing, not an example) is marked on the line before its fence with
``<!-- docs-test: skip (the reason) -->``; there are few (:data:`MAX_SKIPPED`). The docstrings' examples run through
``--doctest-modules`` (pyproject.toml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_explain.data import ShortcutShapesDataModule

try:  # the examples use the unified package (import lightning as L) where it is installed
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover
    import pytorch_lightning as pl  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
SKIP = re.compile(r"<!-- docs-test: skip \((?P<reason>[^)]+)\) -->")
FENCE = re.compile(r"^```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
#: At most this many blocks are marked as not runnable.
MAX_SKIPPED = 5
#: What every Trainer built by an example runs.
FAST = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "accelerator": "cpu",
    "devices": 1,
}


def blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` for each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.fullmatch(before.strip())
        found.append((line, match.group("code"), skip.group("reason") if skip else None))
    return found


class _Classifier(pl.LightningModule):
    """The ``model`` of the examples: a small CNN for ShortcutShapes batches ``(x, y, object_mask, cue_mask)``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fast_trainers(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytorch_lightning

    for cls in {pl.Trainer, pytorch_lightning.Trainer}:
        original = cls.__init__

        def init(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            _original(self, *args, **{**kwargs, **FAST})

        monkeypatch.setattr(cls, "__init__", init)


RUNNABLE = [page for page in PAGES if any(reason is None for _, _, reason in blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_the_python_examples_of_a_page_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _fast_trainers(monkeypatch)
    datamodule = ShortcutShapesDataModule(train_size=16, val_size=8, batch_size=8, image_size=32)
    namespace: dict[str, Any] = {"__name__": "__docs__", "model": _Classifier(), "datamodule": datamodule}
    for line, code, reason in blocks(page):
        if reason is None:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)


def test_the_docs_have_examples_and_few_skipped_blocks() -> None:
    every = [(page, line, reason) for page in PAGES for line, _, reason in blocks(page)]
    skipped = [(page.name, line, reason) for page, line, reason in every if reason is not None]
    assert len(every) - len(skipped) >= 6
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert (ROOT / "docs" / "getting_started.md") in RUNNABLE
