"""Defaults that do not mislead a new user (issue 22): each test fails on the behaviour a first try met.

A probe drawn across the classes of a folder sorted by class; a coarse default layer said so once, with the finer
stage suggested and border_lift NaN instead of a constant 0; a normalisation that does not match the images; labels
dropped from dict batches; images logged at the step of the epoch's validation metrics.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torchvision
from conftest import TinyCNN, loaders, read_event_images, read_event_scalars, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_explain import ExplainCallback, FocusAlert
from lightning_explain.epoch.probe import check_probe

CLASSES = ["cat", "dog", "fox"]


class SortedFolder(Dataset):
    """Like ``ImageFolder``: samples sorted by class, ``classes`` and ``targets`` declared."""

    classes = CLASSES

    def __init__(self, per_class: int = 8, size: int = 16) -> None:
        g = torch.Generator().manual_seed(3)
        self.targets = [c for c in range(len(CLASSES)) for _ in range(per_class)]
        self.images = torch.rand(len(self.targets), 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.targets[i]


def _fit(tmp_path, callbacks, model=None, val=None, **kwargs):
    train, default_val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=callbacks, **kwargs)
    t.fit(model or TinyCNN(), train, val or default_val)
    return t


def _console(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    console = logging.getLogger("pytorch_lightning.lightning_explain")
    console.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="pytorch_lightning.lightning_explain")
    return console


# ------------------------------------------------------------------------------------------- the probe


def test_the_default_probe_is_drawn_across_the_classes_of_a_sorted_folder(tmp_path, caplog):
    folder = SortedFolder()
    cb = ExplainCallback(num_probe=6, methods=("gradcam",), metrics=False)
    console = _console(caplog)
    try:
        _fit(tmp_path, [cb], val=DataLoader(folder, batch_size=8), max_epochs=1)
    finally:
        console.removeHandler(caplog.handler)
    assert cb._probe is not None and cb._probe.labels is not None
    assert cb._probe.labels.tolist() == [0, 0, 1, 1, 2, 2]  # the first 6 samples are all cats
    assert torch.equal(cb._probe.images, folder.images[[0, 1, 8, 9, 16, 17]])  # by dataset index, in order
    said = [r.getMessage() for r in caplog.records if "probe" in r.getMessage()]
    assert "ExplainCallback's probe: 6 images: cat x2, dog x2, fox x2." in said


def test_a_probe_missing_a_class_warns_naming_it_and_subsets_are_followed(tmp_path):
    subset = Subset(SortedFolder(), [0, 1, 2, 8, 9, 16])  # classes cat, cat, cat, dog, dog, fox
    cb = ExplainCallback(num_probe=2, methods=("gradcam",), metrics=False)
    with pytest.warns(UserWarning, match=r"no probe image of class \['fox'\]"):
        _fit(tmp_path, [cb], val=DataLoader(subset, batch_size=8), max_epochs=1)
    assert cb._probe is not None and cb._probe.labels is not None
    assert cb._probe.labels.tolist() == [0, 1]  # cat and dog take their turns before fox


# ------------------------------------------------------------------------------------ coarse default layer


class CoarseResNet(TinyCNN):
    """A torchvision ResNet-18 (random weights) on 64 px images: layer4 has a 2 x 2 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=3)
        del self.features, self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_coarse_default_layer_is_said_once_with_the_finer_stage_and_border_lift_is_nan(tmp_path):
    train = DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])), 4)
    alert = FocusAlert("explain/gradcam/focus/border_lift", threshold=0.5, mode="above")
    cb = ExplainCallback(num_probe=2, methods=("gradcam",))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb, alert], max_epochs=2)
        t.fit(CoarseResNet(), train, train)
    coarse = [str(w.message) for w in record if "grid at this input size" in str(w.message)]
    assert len(coarse) == 1  # once, not every epoch
    assert "'net.layer4.1' has a 2 x 2 grid" in coarse[0] and "target_layer='net.layer3.1' (a 4 x 4 grid)" in coarse[0]
    assert cb.layer_choice is not None and cb.layer_choice.finer is not None
    # border_lift cannot move on a 2 x 2 grid (the border band is every cell): NaN, not a constant 0 to watch.
    scalars = read_event_scalars(t.logger.log_dir)
    values = [v for _, v in scalars["explain/gradcam/focus/border_lift"]]
    assert len(values) == 2 and all(v != v for v in values)
    assert sum("is NaN at epoch" in str(w.message) for w in record) == 1  # FocusAlert says why it cannot fire


# ------------------------------------------------------------------------------------------- normalisation


def test_mean_std_given_for_images_that_are_not_normalised_warn_with_the_cause(tmp_path):
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    cb = ExplainCallback(num_probe=2, methods=("gradcam",), metrics=False, **imagenet)
    with pytest.warns(UserWarning, match=r"no negative value, as images that were never normalised do"):
        _fit(tmp_path, [cb], max_epochs=1)  # conftest's images are in [0, 1], not normalised
    with pytest.warns(UserWarning, match=r"0-255 images: divide by 255"):
        check_probe(torch.rand(2, 3, 8, 8) * 255, **imagenet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalised = (torch.rand(4, 3, 8, 8) - torch.tensor(imagenet["mean"])[:, None, None]) / torch.tensor(
            imagenet["std"]
        )[:, None, None]
        check_probe(normalised, **imagenet)  # the right statistics: no warning


# --------------------------------------------------------------------------------------- dict batches


class DictData(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"img": torch.rand(3, 16, 16), "y": torch.tensor(i % 3)}


class DictModel(TinyCNN):
    def training_step(self, batch, i):
        return super().training_step((batch["img"], batch["y"]), i)

    def validation_step(self, batch, i):
        return super().validation_step((batch["img"], batch["y"]), i)


def test_labels_dropped_from_dict_batches_warn_once_listing_the_keys(tmp_path):
    dl = DataLoader(DictData(), batch_size=4)
    cb = ExplainCallback(num_probe=2, methods=("gradcam",), metrics=False, input_key="img")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        t = trainer(tmp_path, logger=False, callbacks=[cb], max_epochs=2)
        t.fit(DictModel(), dl, dl)
    said = [str(w.message) for w in record if "no 'label'" in str(w.message)]
    assert said == [said[0]] and "keys ['img', 'y']" in said[0] and "label_key=" in said[0]

    wants_labels = ExplainCallback(num_probe=2, methods=("gradcam",), input_key="img", targets="label")
    with pytest.raises(ValueError, match=r"targets='label'.*keys \['img', 'y'\]"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(tmp_path, logger=False, callbacks=[wants_labels], max_epochs=1).fit(DictModel(), dl, dl)


# --------------------------------------------------------------------------------------------- steps


def test_images_are_logged_at_the_step_of_the_epochs_validation_metrics(tmp_path):
    """TensorBoard's step slider: the grids of an epoch sit where val_loss of that epoch sits (fit), and where
    validate() logs its val_loss (step 0 on a fresh trainer, the steps trained so far after fit)."""
    cb = ExplainCallback(num_probe=2, methods=("gradcam",), metrics=False)
    t = _fit(tmp_path, [cb], max_epochs=2)
    log_dir = t.logger.log_dir
    image_steps = [s for s, _ in read_event_images(log_dir)["explain/gradcam"]]
    assert image_steps == [s for s, _ in read_event_scalars(log_dir)["val_loss"]] == [2, 5]

    _, val = loaders()
    again = ExplainCallback(num_probe=2, methods=("gradcam",), metrics=False)
    fresh = trainer(tmp_path / "fresh", logger=TensorBoardLogger(str(tmp_path / "fresh")), callbacks=[again])
    fresh.validate(TinyCNN(), val)
    fresh_dir = fresh.logger.log_dir
    assert [s for s, _ in read_event_images(fresh_dir)["explain/gradcam"]] == [0]
    assert [s for s, _ in read_event_scalars(fresh_dir)["val_loss"]] == [0]
