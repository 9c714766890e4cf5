"""Tests for the synthetic ShortcutShapes dataset and its data module."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from lightning_explain.data import ShortcutShapes, ShortcutShapesDataModule
from lightning_explain.data.shortcut_shapes import CUE_COLORS, NO_CUE, OBJECT_PALETTE


def _assert_same_sample(a: tuple, b: tuple) -> None:
    assert a[1] == b[1]
    for x, y in zip(a[:1] + a[2:], b[:1] + b[2:], strict=True):
        assert x.dtype == y.dtype
        assert torch.equal(x, y)


def test_same_seed_gives_bit_identical_samples_in_any_order() -> None:
    a = ShortcutShapes(20, seed=7)
    b = ShortcutShapes(20, seed=7)
    forward = [a[i] for i in range(20)]
    backward = [b[i] for i in reversed(range(20))][::-1]
    for x, y in zip(forward, backward, strict=True):
        _assert_same_sample(x, y)
    _assert_same_sample(a[3], a[3])
    _assert_same_sample(a[-1], a[19])


def test_different_seeds_give_different_images() -> None:
    a, b = ShortcutShapes(10, seed=0), ShortcutShapes(10, seed=1)
    assert all(not torch.equal(a[i][0], b[i][0]) for i in range(10))
    assert not torch.equal(a[0][2], a[1][2]) or not torch.equal(a[0][0], a[1][0])  # samples differ too


def test_global_rng_state_is_untouched() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    ds = ShortcutShapes(50, cue_agreement=0.5, seed=3)
    for i in range(50):
        ds[i]
        ds.cue_class(i)
        ds.is_conflicting(i)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    # The samples also do not depend on the global state.
    torch.manual_seed(999)
    _assert_same_sample(ds[5], ShortcutShapes(50, cue_agreement=0.5, seed=3)[5])


@pytest.mark.parametrize(("image_size", "num_classes"), [(64, 3), (32, 4), (16, 2), (48, 2)])
def test_shapes_dtypes_and_ranges(image_size: int, num_classes: int) -> None:
    ds = ShortcutShapes(12, image_size=image_size, num_classes=num_classes)
    assert len(ds) == 12
    for i in range(12):
        image, label, object_mask, cue_mask = ds[i]
        assert image.shape == (3, image_size, image_size) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert type(label) is int and label == i % num_classes == ds.label(i)
        assert object_mask.shape == cue_mask.shape == (image_size, image_size)
        assert object_mask.dtype == cue_mask.dtype == torch.bool


def test_labels_cycle_so_classes_are_balanced() -> None:
    ds = ShortcutShapes(600, num_classes=4)
    assert Counter(ds[i][1] for i in range(0, 600, 7)) == Counter(i % 4 for i in range(0, 600, 7))
    assert [ds.label(i) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_object_mask_nonempty_sized_and_disjoint_from_cue_corner() -> None:
    size = 64
    ds = ShortcutShapes(200, image_size=size, num_classes=4, seed=5)
    corner = torch.zeros(size, size, dtype=torch.bool)
    corner[: ds.cue_size, : ds.cue_size] = True
    extents = []
    for i in range(200):
        _, _, object_mask, cue_mask = ds[i]
        assert object_mask.any()
        assert not (object_mask & cue_mask).any()
        assert not (object_mask & corner).any()
        rows, cols = object_mask.any(1).nonzero(), object_mask.any(0).nonzero()
        extents.append(max(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1))
    assert min(extents) >= int(0.3 * size) - 1 and max(extents) <= size // 2
    assert len(set(extents)) > 5  # sizes vary


def test_object_pixels_are_brighter_than_background() -> None:
    ds = ShortcutShapes(30, noise=0.0, cue_agreement=None)
    for i in range(30):
        image, _, object_mask, _ = ds[i]
        fg = image[:, object_mask].mean(1)
        bg = image[:, ~object_mask].mean(1)
        assert float((fg - bg).abs().max()) > 0.3
        # Without noise the object is exactly one palette colour and the background one dim colour.
        assert any(torch.allclose(fg, torch.tensor(c)) for c in OBJECT_PALETTE)
        assert float(image[:, ~object_mask].std(1).max()) < 1e-6


def test_object_colour_is_independent_of_label() -> None:
    ds = ShortcutShapes(480, num_classes=3, noise=0.0, cue_agreement=None)
    palette = torch.tensor(OBJECT_PALETTE)
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for i in range(480):
        image, label, object_mask, _ = ds[i]
        colour = image[:, object_mask].mean(1)
        seen[label].add(int((palette - colour).abs().sum(1).argmin()))
    assert all(len(s) == len(OBJECT_PALETTE) for s in seen.values())


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_cue_pixels_have_the_cue_class_colour(num_classes: int) -> None:
    ds = ShortcutShapes(40, num_classes=num_classes, cue_agreement=0.5, seed=2, noise=0.2)
    c = ds.cue_size
    for i in range(40):
        image, _, _, cue_mask = ds[i]
        cue = ds.cue_class(i)
        assert 0 <= cue < num_classes
        assert int(cue_mask.sum()) == c * c and bool(cue_mask[:c, :c].all())
        expected = torch.tensor(CUE_COLORS[cue]).view(3, 1)
        assert torch.equal(image[:, cue_mask], expected.expand(3, c * c))
    colours = {tuple(ds[i][0][:, 0, 0].tolist()) for i in range(40)}
    assert len(colours) == num_classes  # every class colour appears and they are distinct


def test_cue_size_argument() -> None:
    assert ShortcutShapes(2, image_size=64).cue_size == 10
    assert ShortcutShapes(2, image_size=16).cue_size == 3
    ds = ShortcutShapes(2, image_size=32, cue_size=5)
    assert int(ds[0][3].sum()) == 25


@pytest.mark.parametrize("cue_agreement", [1.0, 0.0, 1 / 3, 0.8, None])
def test_cue_agreement_rate(cue_agreement: float | None) -> None:
    n = 600
    ds = ShortcutShapes(n, num_classes=3, cue_agreement=cue_agreement, seed=11)
    cues = [ds.cue_class(i) for i in range(n)]
    labels = [ds.label(i) for i in range(n)]
    conflicting = [ds.is_conflicting(i) for i in range(n)]
    if cue_agreement is None:
        assert set(cues) == {NO_CUE} and not any(conflicting)
        assert all(not ds[i][3].any() for i in range(0, n, 20))
        return
    agree = sum(c == y for c, y in zip(cues, labels, strict=True)) / n
    assert conflicting == [c != y for c, y in zip(cues, labels, strict=True)]
    if cue_agreement in (0.0, 1.0):
        assert agree == cue_agreement
    else:
        assert abs(agree - cue_agreement) < 0.08
    # Conflicting cues are uniform over the other classes.
    wrong = Counter((y, c) for c, y in zip(cues, labels, strict=True) if c != y)
    if cue_agreement == 0.0:
        assert len(wrong) == 6 and min(wrong.values()) > 60
    # cue_class agrees with what __getitem__ draws.
    for i in range(0, n, 25):
        assert ds[i][3].any()
        assert tuple(ds[i][0][:, 0, 0].tolist()) == CUE_COLORS[cues[i]]


def test_cue_agreement_only_changes_the_cue_patch() -> None:
    a = ShortcutShapes(30, cue_agreement=1.0, seed=4)
    b = ShortcutShapes(30, cue_agreement=0.0, seed=4)
    c = ShortcutShapes(30, cue_agreement=None, seed=4)
    for i in range(30):
        (ia, la, oa, ca), (ib, lb, ob, cb), (ic, _, oc, cc) = a[i], b[i], c[i]
        assert la == lb and torch.equal(oa, ob) and torch.equal(oa, oc)
        assert torch.equal(ia[:, ~ca], ib[:, ~ca]) and torch.equal(ia[:, ~ca], ic[:, ~ca])
        assert not torch.equal(ia[:, ca], ib[:, cb])
        assert not cc.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples must be an int >= 1; got 0"),
        ({"num_classes": 5}, r"num_classes must be one of \[2, 3, 4\]; got 5"),
        ({"num_classes": 1}, r"num_classes must be one of \[2, 3, 4\]; got 1"),
        ({"cue_agreement": 1.5}, r"cue_agreement must be None \(no cue\) or a float in \[0, 1\]; got 1.5"),
        ({"cue_agreement": -0.1}, "cue_agreement .* got -0.1"),
        ({"cue_agreement": float("nan")}, "cue_agreement .* got nan"),
        ({"image_size": 8}, "image_size must be an int >= 16; got 8"),
        ({"cue_size": 0}, r"cue_size must be None or an int in \[1, 31\] for image_size=64 .* got 0"),
        ({"cue_size": 40}, r"cue_size .* got 40"),
        ({"noise": -1.0}, "noise must be a finite float >= 0; got -1.0"),
        ({"seed": 1.5}, "seed must be an int; got 1.5"),
    ],
)
def test_argument_validation(kwargs: dict, match: str) -> None:
    args = {"num_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ShortcutShapes(args.pop("num_samples"), **args)


def test_index_out_of_range() -> None:
    ds = ShortcutShapes(5)
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    with pytest.raises(IndexError):
        ds.cue_class(-6)


def test_default_collate_through_dataloader() -> None:
    ds = ShortcutShapes(10, image_size=32)
    images, labels, object_masks, cue_masks = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.long
    assert labels.tolist() == [0, 1, 2, 0]
    assert object_masks.shape == cue_masks.shape == (4, 32, 32)
    assert object_masks.dtype == cue_masks.dtype == torch.bool


def test_pickle_roundtrip_keeps_samples() -> None:
    ds = ShortcutShapes(8, cue_agreement=0.5, seed=9)
    _assert_same_sample(pickle.loads(pickle.dumps(ds))[6], ds[6])


def test_datamodule_splits_loaders_and_val_cue() -> None:
    dm = ShortcutShapesDataModule(
        train_size=40, val_size=24, batch_size=8, image_size=32, cue_agreement=1.0, val_cue_agreement=None
    )
    assert dm.hparams["val_cue_agreement"] is None
    assert len(dm.train_set) == 40 and len(dm.val_set) == 24
    assert dm.train_set.seed != dm.val_set.seed
    assert dm.train_set.cue_agreement == 1.0 and dm.val_set.cue_agreement is None
    train_images = {dm.train_set[i][0].sum().item() for i in range(24)}
    assert not train_images & {dm.val_set[i][0].sum().item() for i in range(24)}

    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, RandomSampler) and isinstance(val.sampler, SequentialSampler)
    images, labels, object_masks, cue_masks = next(iter(val))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.long
    assert labels.tolist() == [i % 3 for i in range(8)]
    assert object_masks.shape == (8, 32, 32) and not cue_masks.any()
    assert next(iter(train))[3].any()


def test_datamodule_val_cue_defaults_to_train_cue() -> None:
    dm = ShortcutShapesDataModule(train_size=8, val_size=8, cue_agreement=0.0, seed=3)
    assert dm.val_set.cue_agreement == 0.0
    assert all(dm.val_set.is_conflicting(i) for i in range(8))
    other = ShortcutShapesDataModule(train_size=8, val_size=8, seed=4)
    assert {dm.train_set.seed, dm.val_set.seed}.isdisjoint({other.train_set.seed, other.val_set.seed})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_cue_agreement": 2.0}, "val_cue_agreement .* got 2.0"),
        ({"val_cue_agreement": "half"}, "val_cue_agreement must be 'same', None or a float"),
        ({"batch_size": 0}, "batch_size must be an int >= 1; got 0"),
        ({"train_size": 0}, "train_size must be an int >= 1; got 0"),
        ({"num_classes": 7}, "num_classes must be one of"),
    ],
)
def test_datamodule_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShortcutShapesDataModule(**kwargs)


def test_cue_concept_images_are_cue_free_images_with_one_class_cue():
    from lightning_explain.data import cue_concept_images

    concept = cue_concept_images(2, 5, image_size=40, cue_size=8, noise=0.1, seed=3)
    plain = ShortcutShapes(5, image_size=40, cue_agreement=None, seed=3, cue_size=8, noise=0.1)
    for i in range(5):
        expected = plain[i][0].clone()
        expected[:, :8, :8] = torch.tensor(CUE_COLORS[2]).view(3, 1, 1)
        assert torch.equal(concept[i], expected)
    with pytest.raises(ValueError, match=r"class_index must lie in \[0, 2\]; got 3"):
        cue_concept_images(3)
