"""Property-based tests (hypothesis) over batch structures and shapes: with strict=False, no input crashes a run.

Generated: the sample structure (a bare tensor, a tuple or a list with labels and extra items, a dict with extra
keys), the label form (class indices, ``[1]``-shaped indices, one-hot floats, strings, none), channels (1, 3, 4),
image sizes 2..20 (odd, non-square), dataset and batch sizes down to 1, ``num_probe``. Each example is a real
two-epoch Trainer fit. Structures the callback understands must train to the end and log every view; a dict whose
image key is not ``input_key`` must fail before the first training step with the documented error, never later.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import pytest
import torch
from conftest import TinyCNN, read_event_images, trainer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from lightning_explain import ExplainCallback

TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow],
)


def _label(form: str, y: int) -> Any:
    return {
        "index": torch.tensor(y),
        "index_1": torch.tensor([y]),
        "one_hot": torch.nn.functional.one_hot(torch.tensor(y), 3).float(),
        "string": f"class {y}",
        "int": y,
    }[form]


class _Structured(Dataset):
    def __init__(self, n: int, channels: int, size: tuple[int, int], structure: str, label: str, extras: int):
        g = torch.Generator().manual_seed(n * 100 + channels)
        self.x = torch.rand(n, channels, *size, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g).tolist()
        self.structure, self.label, self.extras = structure, label, extras

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Any:
        x, y = self.x[i], _label(self.label, self.y[i])
        extra = [torch.zeros(2), "meta", {"id": i}][: self.extras]
        if self.structure == "tensor":
            return x
        if self.structure == "tuple":
            return (x, y, *extra)
        if self.structure == "list":
            return [x, y, *extra]
        key = "image" if self.structure == "dict" else "pixels"
        return {key: x, "label": y, **{f"extra{j}": e for j, e in enumerate(extra)}}


class _AnyBatch(TinyCNN):
    """Trains on whatever structure it is given (it knows where its images are); no labels needed."""

    def _images(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            return batch
        if isinstance(batch, dict):
            return batch["image"] if "image" in batch else batch["pixels"]
        return batch[0]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(self._images(batch)).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self(self._images(batch)).pow(2).mean())


structures = st.sampled_from(["tensor", "tuple", "list", "dict"])
labels = st.sampled_from(["index", "index_1", "one_hot", "string", "int"])


def _run(data: _Structured, batch_size: int, num_probe: int, steps: list[int] | None = None) -> dict:
    """A two-epoch fit; appends each training step's batch index to ``steps`` as it runs (so a caller's list
    holds the steps taken before an error too). Returns the logged images."""
    steps = [] if steps is None else steps

    class Model(_AnyBatch):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb = ExplainCallback(num_probe=num_probe, strict=False)
        t = trainer(tmp, logger=TensorBoardLogger(tmp, name="tb"), callbacks=[cb], max_epochs=2)
        model = Model(in_channels=data.x.shape[1])
        try:
            t.fit(model, DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size))
        finally:
            images = read_event_images(t.logger.log_dir) if t.logger is not None else {}
    assert t.current_epoch == 2
    return images


@pytest.mark.slow
@SETTINGS
@given(
    structure=structures,
    label=labels,
    extras=st.integers(0, 3),
    channels=st.sampled_from([1, 3, 4]),
    height=st.integers(2, 20),  # 1x1 with batch 1 breaks the model's own BatchNorm in training
    width=st.integers(2, 20),
    n=st.integers(1, 6),
    batch_size=st.integers(1, 4),
    num_probe=st.integers(1, 5),
)
def test_understood_structures_train_to_the_end_and_log_every_view(
    structure, label, extras, channels, height, width, n, batch_size, num_probe
):
    data = _Structured(n, channels, (height, width), structure, label, extras)
    images = _run(data, batch_size, num_probe)
    assert set(images) == TAGS
    assert all(len(events) == 2 for events in images.values())  # one per epoch


@settings(SETTINGS, max_examples=8)
@given(label=labels, extras=st.integers(0, 3), n=st.integers(1, 6), batch_size=st.integers(1, 4))
def test_a_dict_without_the_input_key_fails_before_the_first_training_step(label, extras, n, batch_size):
    data = _Structured(n, 3, (8, 8), "dict_other_key", label, extras)
    steps: list[int] = []  # filled by the model as it trains, also when the fit raises afterwards
    with pytest.raises(ValueError, match="the batch is a mapping without the key 'image'") as err:
        _run(data, batch_size, 4, steps)
    assert "Pass input_key=" in str(err.value)
    assert steps == []


def test_steps_are_recorded_when_the_input_key_is_right():
    # The counterpart of the test above: the same recording sees every step of a run that gets that far.
    steps: list[int] = []
    _run(_Structured(4, 3, (8, 8), "dict", "index", 1), 2, 4, steps)
    assert steps == [0, 1, 0, 1]  # two batches in each of two epochs
