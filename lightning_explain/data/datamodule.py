"""ShortcutShapesDataModule: train and validation splits of :class:`ShortcutShapes` for a Lightning ``Trainer``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch.utils.data import DataLoader

from lightning_explain._lightning import LightningDataModule
from lightning_explain.data.shortcut_shapes import Sample, ShortcutShapes, check_int, check_probability

if TYPE_CHECKING:
    pass

__all__ = ["ShortcutShapesDataModule"]


class ShortcutShapesDataModule(LightningDataModule):
    """Train and validation :class:`ShortcutShapes` sets, e.g. a reliable cue in training and none in val.

    The training set uses seed ``2 * seed`` and the validation set ``2 * seed + 1``, so they never share
    samples (and data modules with different seeds share none either). The datasets are lazy, so they are
    built in ``__init__`` and available as :attr:`train_set` and :attr:`val_set` right away.

    Args:
        train_size: Number of training samples.
        val_size: Number of validation samples.
        batch_size: Batch size of both loaders.
        image_size: Side of the square images (at least 16).
        num_classes: Number of shape classes, 2 to 4.
        cue_agreement: ``cue_agreement`` of the training set (see :class:`ShortcutShapes`).
        val_cue_agreement: ``cue_agreement`` of the validation set; ``"same"`` (default) copies
            ``cue_agreement``, ``None`` draws no cue, ``0.0`` makes every cue conflict.
        seed: Base seed.
        num_workers: Data loader worker processes.
        cue_size: Side of the cue patch of both sets (default ``image_size // 6``).
        noise: Background noise std of both sets.

    Example:
        >>> dm = ShortcutShapesDataModule(train_size=64, val_size=32, batch_size=16, val_cue_agreement=0.0)
        >>> images, labels, object_masks, cue_masks = next(iter(dm.val_dataloader()))
        >>> tuple(images.shape), labels.dtype, tuple(cue_masks.shape)
        ((16, 3, 64, 64), torch.int64, (16, 64, 64))

        In a LightningCLI config::

            data:
              class_path: lightning_explain.data.ShortcutShapesDataModule
              init_args: {cue_agreement: 1.0, val_cue_agreement: null}
    """

    def __init__(
        self,
        *,
        train_size: int = 512,
        val_size: int = 128,
        batch_size: int = 32,
        image_size: int = 64,
        num_classes: int = 3,
        cue_agreement: float | None = 1.0,
        val_cue_agreement: float | Literal["same"] | None = "same",
        seed: int = 0,
        num_workers: int = 0,
        cue_size: int | None = None,
        noise: float = 0.05,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        if val_cue_agreement == "same":
            val_cue_agreement = cue_agreement
        elif isinstance(val_cue_agreement, str):
            raise ValueError(f"val_cue_agreement must be 'same', None or a float in [0, 1]; got {val_cue_agreement!r}.")
        else:
            val_cue_agreement = check_probability("val_cue_agreement", val_cue_agreement)
        self.train_set = ShortcutShapes(
            check_int("train_size", train_size, 1),
            cue_agreement=cue_agreement,
            seed=2 * seed,
            image_size=image_size,
            num_classes=num_classes,
            cue_size=cue_size,
            noise=noise,
        )
        self.val_set = ShortcutShapes(
            check_int("val_size", val_size, 1),
            cue_agreement=val_cue_agreement,
            seed=2 * seed + 1,
            image_size=image_size,
            num_classes=num_classes,
            cue_size=cue_size,
            noise=noise,
        )

    def _loader(self, dataset: ShortcutShapes, shuffle: bool) -> DataLoader[Sample]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Sample]:
        """Shuffled training loader yielding ``(images, labels, object_masks, cue_masks)`` batches."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[Sample]:
        """Validation loader in dataset order, same batch layout as :meth:`train_dataloader`."""
        return self._loader(self.val_set, shuffle=False)
