"""Reading the probe: batch structures, the RNG left untouched, iterable and empty data sets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import make_dataset
from torch.utils.data import DataLoader, IterableDataset

from lightning_explain.epoch.probe import probe_from_dataloader, unpack_batch


def test_unpack_batch_structures():
    x, y = torch.zeros(2, 3, 4, 4), torch.tensor([1, 0])
    assert unpack_batch(x)[1] is None
    assert torch.equal(unpack_batch((x, y, "extra"))[1], y)
    assert torch.equal(unpack_batch({"image": x, "label": y})[1], y)
    assert torch.equal(unpack_batch({"img": x}, input_key="img")[0], x)
    assert unpack_batch((x, torch.rand(2, 5)))[1] is None  # not class indices: no labels
    assert torch.equal(unpack_batch([x, [1, 0]])[1], y)
    assert unpack_batch("anything", unpacker=lambda b: (x, None))[0] is x
    with pytest.raises(ValueError, match=r"without the key 'image'.*input_key="):
        unpack_batch({"pixels": x})
    with pytest.raises(TypeError, match="unpack_batch="):
        unpack_batch(42)


def test_reading_the_probe_leaves_every_rng_untouched():
    loader = DataLoader(make_dataset(20), batch_size=4, shuffle=True)
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    probe = probe_from_dataloader(loader, 6)
    assert torch.equal(probe.images, loader.dataset.tensors[0][:6])  # first samples, not a shuffled batch
    assert torch.equal(torch.get_rng_state(), state[0])
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert random.getstate() == state[2]


def test_iterable_dataset_probe():
    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(10):
                yield torch.full((3, 4, 4), float(i)), i % 3

    probe = probe_from_dataloader(DataLoader(Stream(), batch_size=4), 6)
    assert probe.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert probe.labels.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.warns(UserWarning, match="has only 10"):
        assert len(probe_from_dataloader(DataLoader(Stream(), batch_size=4), 16)) == 10


def test_empty_validation_set_is_a_clear_error():
    with pytest.raises(ValueError, match="validation dataset is empty"):
        probe_from_dataloader(DataLoader(make_dataset(0)), 4)
