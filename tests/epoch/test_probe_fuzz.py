"""Fuzzing the batch readers (hypothesis): any batch structure, dtype, shape and NaN/inf content either reads into a
probe or raises TypeError / ValueError with a message that says what to pass instead; nothing else escapes."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lightning_explain.epoch.probe import probe_from_dataloader, unpack_batch

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow],
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64, torch.bool]
DOCUMENTED = (TypeError, ValueError)


@st.composite
def tensors(draw: Any) -> torch.Tensor:
    """A tensor of any dtype with 0-5 dims of 0-4 elements, floats salted with NaN, inf and -inf."""
    shape = draw(st.lists(st.integers(0, 4), max_size=5))
    dtype = draw(st.sampled_from(DTYPES))
    t = (torch.rand(shape) * 4).to(dtype)
    if t.is_floating_point() and t.numel() and draw(st.booleans()):
        flat = t.view(-1)
        for i in draw(st.lists(st.integers(0, t.numel() - 1), max_size=3)):
            flat[i] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return t


LEAVES = st.one_of(
    tensors(),
    st.none(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=4),
)
BATCHES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.sampled_from(["image", "label", "mask", 0, "x"]), inner, max_size=4),
    ),
    max_leaves=8,
)


def _check_read(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    assert isinstance(images, torch.Tensor)
    if labels is not None:  # labels are class indices, one per image, or absent
        assert labels.dtype == torch.long and labels.ndim == 1 and labels.shape[0] == images.shape[0]


def _check_error(err: Exception) -> None:
    assert isinstance(err, DOCUMENTED), f"{type(err).__name__}: {err}"
    message = str(err)
    assert len(message) > 20, message  # a sentence that names the problem, not a bare key or index


@SETTINGS
@given(batch=BATCHES)
@example(batch=(torch.zeros(()), torch.tensor([1])))  # a 0-dim "batch" of images
@example(batch={"image": torch.zeros(2, 3, 4, 4), "label": ["a", "b"]})  # string labels: no labels
@example(batch=[torch.zeros(2, 3, 4, 4), torch.tensor([[0, 1]])])  # labels of the wrong shape: no labels
def test_unpack_batch_reads_or_raises_a_documented_error(batch):
    try:
        images, labels = unpack_batch(batch)
    except Exception as err:
        _check_error(err)
    else:
        _check_read(images, labels)


@SETTINGS
@given(batches=st.lists(BATCHES, min_size=0, max_size=3), num=st.integers(1, 6))
@example(batches=[torch.zeros(()), torch.zeros(())], num=2)  # 0-dim images: no batch dimension to count
@example(batches=[torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8)], num=4)  # batches of different image sizes
@example(batches=[torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4)], num=4)  # ... of different channels
@example(batches=[], num=1)  # an empty loader
def test_probe_from_an_iterable_loader_reads_or_raises_a_documented_error(batches, num):
    try:
        probe = probe_from_dataloader(batches, num)
    except Exception as err:
        _check_error(err)
    else:
        _check_read(probe.images, probe.labels)
        assert probe.images.shape[0] <= max(num, sum(1 for _ in batches) and probe.images.shape[0])
