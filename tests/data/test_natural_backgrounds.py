"""Tests for NaturalShortcut (textured shapes on crops of scikit-image's photographs) and its data module."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import require_module

from lightning_explain.data import NaturalShortcut, NaturalShortcutDataModule
from lightning_explain.data.natural_backgrounds import load_photo
from lightning_explain.functional.boxes import boxes_to_masks

require_module("skimage")  # the photographs come from scikit-image's wheel (the `natural` extra)


def test_a_sample_is_a_pure_function_of_seed_split_and_index_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    a = NaturalShortcut(12, image_size=24, seed=5)
    forward = [a[i] for i in range(12)]
    torch.manual_seed(99)  # the global state does not matter either
    backward = [NaturalShortcut(12, image_size=24, seed=5)[i] for i in reversed(range(12))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert x[1] == y[1] and all(torch.equal(u, v) for u, v in zip(x[::2] + x[3:], y[::2] + y[3:], strict=True))
    torch.manual_seed(1)
    for i in range(12):
        a[i], a.background_class(i), a.is_conflicting(i)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert not torch.equal(a[0][0], NaturalShortcut(12, image_size=24, seed=6)[0][0])


def test_sample_layout_mask_and_box_agree() -> None:
    ds = NaturalShortcut(9, image_size=32, num_classes=3, seed=2)
    for i in range(9):
        image, label, mask, box = ds[i]
        assert image.dtype == torch.float32 and tuple(image.shape) == (3, 32, 32)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert label == i % 3 and mask.dtype == torch.bool and bool(mask.any())
        assert box.dtype == torch.float32 and tuple(box.shape) == (4,)
        filled = boxes_to_masks(box[None], 32, 32)[0]
        assert bool((mask <= filled).all())  # the box holds the mask ...
        assert bool(filled[mask.any(1)].any(0).equal(mask.any(0)))  # ... and is its tight bounding box
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        # The object is textured, not a flat colour.
        assert float(image[:, mask].std(dim=1).mean()) > 0.05


@pytest.mark.parametrize("p", [1.0, 0.95, 1 / 3])
def test_background_agreement_rate(p: float) -> None:
    ds = NaturalShortcut(900, image_size=16, background_agreement=p, seed=4)
    agree = sum(ds.background_class(i) == ds.label(i) for i in range(900)) / 900
    assert abs(agree - p) < 0.04
    conflicts = Counter(ds.background_class(i) for i in range(900) if ds.is_conflicting(i))
    if p < 1:  # the disagreeing backgrounds cover every class
        assert set(conflicts) == {0, 1, 2}


def test_counter_split_always_disagrees_and_shows_the_photograph_of_its_background_class() -> None:
    ds = NaturalShortcut(60, split="counter", image_size=16, background_agreement=1.0, seed=0)
    assert all(ds.background_class(i) != ds.label(i) for i in range(60))


def test_train_and_evaluation_crops_come_from_disjoint_rows_of_each_photograph() -> None:
    train = NaturalShortcut(1, split="train", background_agreement=1.0)
    val = NaturalShortcut(1, split="val", background_agreement=1.0)
    grass = load_photo("grass")
    cut = round(grass.shape[1] * 0.6)
    assert torch.equal(train._photos[0], grass[:, :cut]) and torch.equal(val._photos[0], grass[:, cut:])
    # Same seed and index, other split: other crops.
    assert not torch.equal(train[0][0], val[0][0])


def test_agreement_only_changes_the_background() -> None:
    a = NaturalShortcut(30, image_size=24, background_agreement=1.0, seed=3)
    b = NaturalShortcut(30, image_size=24, background_agreement=0.0, seed=3)
    for i in range(30):
        (xa, _, ma, ba), (xb, _, mb, bb) = a[i], b[i]
        assert torch.equal(ma, mb) and torch.equal(ba, bb)
        assert not torch.equal(xa[:, ~ma], xb[:, ~mb])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "test"}, "split must be one of"),
        ({"num_classes": 5}, "num_classes must be one of"),
        ({"background_agreement": 1.5}, "background_agreement must be a float in"),
        ({"backgrounds": ("grass", "grass", "brick")}, "backgrounds must name 3 different"),
        ({"backgrounds": ("grass", "moon", "brick")}, "backgrounds must name 3 different"),
        ({"image_size": 8}, "image_size must be an int >= 16"),
    ],
)
def test_argument_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NaturalShortcut(4, **kwargs)


def test_missing_scikit_image_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    load_photo.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        with pytest.raises(ImportError, match=r"lightning-explain\[natural\]"):
            NaturalShortcut(4)
    finally:
        load_photo.cache_clear()


def test_datamodule_splits_and_loaders() -> None:
    dm = NaturalShortcutDataModule(train_size=40, val_size=20, counter_size=10, batch_size=8, image_size=24, seed=1)
    assert (dm.train_set.split, dm.val_set.split, dm.counter_set.split) == ("train", "val", "counter")
    assert len(dm.train_set) == 40 and len(dm.val_set) == 20 and len(dm.counter_set) == 10
    images, labels, masks, boxes = next(iter(dm.val_dataloader()))
    assert tuple(images.shape) == (8, 3, 24, 24) and tuple(masks.shape) == (8, 24, 24) and tuple(boxes.shape) == (8, 4)
    assert labels.tolist() == [i % 3 for i in range(8)]
    counter = next(iter(dm.counter_dataloader()))
    assert all(dm.counter_set.background_class(i) != int(counter[1][i]) for i in range(8))
