"""Fuzzing what the validation images hold (hypothesis): dtype, NaN and inf in some images, ``strict``. A real
two-epoch Trainer fit each: it trains to the end and logs every view at every epoch (a NaN or inf image gets a
setup warning and a blank map; integer images skip the pixel methods with a warning), or it fails before the first
training step with TypeError / ValueError."""

from __future__ import annotations

import math
import tempfile
import warnings
from typing import Any

import torch
from conftest import TinyCNN, read_event_images, trainer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback

TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8]
EPOCHS = 2


class _AnyDtype(TinyCNN):
    """Converts its own images to float32 (as a model fed uint8 or half images by its data module would)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    salt=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([math.nan, math.inf, -math.inf])), max_size=3),
    strict=st.booleans(),
)
@example(dtype=torch.float32, salt=[(0, math.nan), (1, math.inf)], strict=True)
@example(dtype=torch.float16, salt=[(2, -math.inf)], strict=False)
def test_any_image_content_trains_to_the_end_or_fails_before_training(dtype, salt, strict):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=g)
    for index, value in salt:
        images[index, 0, index, index] = value
    val_images = (images * 255).to(dtype) if dtype == torch.uint8 else images.to(dtype)
    labels = torch.arange(6) % 3
    train = DataLoader(TensorDataset(torch.rand(6, 3, 16, 16, generator=g), labels), batch_size=3)
    val = DataLoader(TensorDataset(val_images, labels), batch_size=3)
    steps: list[int] = []

    class Model(_AnyDtype):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb = ExplainCallback("features.3", num_probe=6, cell_size=32, strict=strict)
        t = trainer(tmp, logger=TensorBoardLogger(tmp, name="tb"), callbacks=[cb], max_epochs=EPOCHS)
        try:
            t.fit(Model(), train, val)
        except (TypeError, ValueError) as err:
            assert not steps, f"failed after {len(steps)} training steps: {err}"
            raise
        logged = read_event_images(t.logger.log_dir)
    assert t.current_epoch == EPOCHS
    messages = [str(w.message) for w in caught]
    tags = TAGS
    if dtype == torch.uint8:  # saliency needs floating-point pixels: skipped, with the reason
        tags = TAGS - {"explain/saliency"}
        assert any("dtype torch.uint8" in m and "['saliency'] are skipped" in m for m in messages), messages
    assert set(logged) == tags and all(len(events) == EPOCHS for events in logged.values()), logged.keys()
    bad = sorted({index for index, _ in salt}) if dtype != torch.uint8 else []
    if bad:
        assert any(f"probe images {bad} hold NaN or inf" in m for m in messages), messages
    assert not any(" failed at epoch " in m for m in messages), messages  # no view failed (and was given up)
