"""NaturalShortcutDataModule: train, validation and counter splits of :class:`NaturalShortcut` for a ``Trainer``."""

from __future__ import annotations

from torch.utils.data import DataLoader

from lightning_explain._lightning import LightningDataModule
from lightning_explain.data.natural_backgrounds import NaturalSample, NaturalShortcut
from lightning_explain.data.shortcut_shapes import check_int

__all__ = ["NaturalShortcutDataModule"]


class NaturalShortcutDataModule(LightningDataModule):
    """Training and in-distribution validation :class:`NaturalShortcut` sets, plus the counter split.

    The training set crops the top of each photograph, the validation and counter sets the bottom (see
    :class:`NaturalShortcut`); all three share ``background_agreement`` (the counter set ignores it: its background
    always disagrees). The data sets are lazy and built in ``__init__``: :attr:`train_set`, :attr:`val_set` and
    :attr:`counter_set`. ``val_dataloader`` returns only the in-distribution set (what a user would watch);
    :meth:`counter_dataloader` gives the worst group for measuring reliance on the background.

    Args:
        train_size: Number of training samples.
        val_size: Number of in-distribution validation samples.
        counter_size: Number of counter samples.
        batch_size: Batch size of every loader.
        image_size: Side of the square images (at least 16).
        num_classes: Number of shape classes, 2 to 4.
        background_agreement: Probability that the background is the label's photograph (0.95: a shortcut;
            ``1 / num_classes``: a clean control).
        seed: Base seed of the three sets.
        num_workers: Data loader worker processes.
        noise: Noise std of every set.

    Example:
        >>> dm = NaturalShortcutDataModule(train_size=64, val_size=32, batch_size=16, image_size=32)
        >>> images, labels, object_masks, boxes = next(iter(dm.val_dataloader()))
        >>> tuple(images.shape), tuple(object_masks.shape), tuple(boxes.shape)
        ((16, 3, 32, 32), (16, 32, 32), (16, 4))
    """

    def __init__(
        self,
        *,
        train_size: int = 768,
        val_size: int = 256,
        counter_size: int = 256,
        batch_size: int = 32,
        image_size: int = 48,
        num_classes: int = 3,
        background_agreement: float = 0.95,
        seed: int = 0,
        num_workers: int = 0,
        noise: float = 0.03,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        train_size, val_size = check_int("train_size", train_size, 1), check_int("val_size", val_size, 1)
        sizes = {"train": train_size, "val": val_size, "counter": check_int("counter_size", counter_size, 1)}
        self.train_set, self.val_set, self.counter_set = (
            NaturalShortcut(
                sizes[split],
                split=split,
                image_size=image_size,
                num_classes=num_classes,
                background_agreement=background_agreement,
                seed=seed,
                noise=noise,
            )
            for split in ("train", "val", "counter")
        )

    def _loader(self, dataset: NaturalShortcut, shuffle: bool) -> DataLoader[NaturalSample]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[NaturalSample]:
        """Shuffled training loader of ``(images, labels, object_masks, boxes)`` batches."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[NaturalSample]:
        """In-distribution validation loader in data set order (the probe comes from here)."""
        return self._loader(self.val_set, shuffle=False)

    def counter_dataloader(self) -> DataLoader[NaturalSample]:
        """The counter split (the background always shows another class), in data set order."""
        return self._loader(self.counter_set, shuffle=False)
