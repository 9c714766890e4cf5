"""Both Lightning namespaces: ``pytorch_lightning`` and the unified ``lightning`` package (``import lightning as L``).

They ship the same code under two module names, so ``lightning.pytorch.Callback`` and ``pytorch_lightning.Callback``
are different classes: a ``Trainer`` wraps a single callback in a list only when it is an instance of its own
namespace's ``Callback``, and LightningCLI accepts a ``class_path`` only if it subclasses its own namespace's
``Callback``. Every callback of this package derives from :data:`Callback`, a class with the ``Callback`` of each
installed namespace as its bases, so it is an instance of both. Either package alone is enough.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["NAMESPACES", "Callback", "LightningDataModule", "is_fitting", "logged_step"]


def _namespace(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: The installed Lightning namespaces, ``pytorch_lightning`` first.
NAMESPACES: tuple[ModuleType, ...] = tuple(
    module for module in (_namespace("pytorch_lightning"), _namespace("lightning.pytorch")) if module is not None
)
if not NAMESPACES:
    raise ImportError(
        "lightning_explain needs PyTorch Lightning: pip install lightning (or pip install pytorch-lightning)."
    )

if TYPE_CHECKING:
    from pytorch_lightning import Callback, LightningDataModule
else:
    Callback = type("Callback", tuple(ns.Callback for ns in NAMESPACES), {"__module__": __name__})
    LightningDataModule = type(
        "LightningDataModule", tuple(ns.LightningDataModule for ns in NAMESPACES), {"__module__": __name__}
    )


def is_fitting(trainer: Any) -> bool:
    """Whether ``trainer`` is in ``fit`` (its ``TrainerFn`` is a string enum in both namespaces)."""
    return bool(trainer.state.fn == "fit")


def logged_step(trainer: Any) -> int:
    """The step at which Lightning logs what is logged now: an epoch's validation metrics during ``fit`` land at the
    step of the epoch's last training batch (``global_step - 1`` at validation end), so images logged at this step
    line up with ``val_loss`` on TensorBoard's step axis. Outside ``fit`` (``validate()``, ``test()``) it is the
    step Lightning's own ``log_metrics`` uses there: the batches trained so far (0 for a fresh trainer).
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    stepped = getattr(loop, "_batches_that_stepped", None)  # what Lightning's logger connector logs at
    if isinstance(stepped, int):
        return stepped
    step = int(trainer.global_step)
    return max(step - 1, 0) if is_fitting(trainer) and not getattr(trainer, "sanity_checking", False) else step
