"""The memory guard: a simulated small budget splits the probe (same maps, said once); an out-of-memory error in a
view is retried once in halves, then the view is skipped with the cause; the estimate counts real module outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, read_event_images, trainer
from torch import Tensor, nn

from lightning_explain import ExplainCallback
from lightning_explain.epoch.memory import MemoryGuard, explain_in_chunks, record_activation_bytes
from lightning_explain.functional import explain

MIB = 2**20


def _run(tmp_path: Path, callback: ExplainCallback, model: nn.Module | None = None) -> tuple[dict, list[str]]:
    torch.manual_seed(0)
    model = model or TinyCNN()
    train, val = loaders()
    from pytorch_lightning.loggers import TensorBoardLogger

    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[callback], max_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(model, train, val)
    messages = [str(w.message) for w in caught if "ExplainCallback" in str(w.message)]
    return read_event_images(t.logger.log_dir), messages


def test_estimate_counts_each_module_output_once() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(256, 2))
    with record_activation_bytes(model) as seen:
        model(torch.rand(2, 3, 8, 8))
    conv = 2 * 4 * 8 * 8 * 4  # the in-place ReLU returns the conv's storage: counted once; Flatten is a view
    assert (seen.total, seen.batch) == (conv + 2 * 2 * 4, 2)
    assert seen.per_image == 2 * seen.total / 2
    assert not any(m._forward_hooks for m in model.modules())


def test_small_simulated_budget_splits_the_probe_with_the_same_maps(tmp_path: Path) -> None:
    guard = MemoryGuard(0.5, free_memory=lambda device: 256 * 1024)  # 256 KiB "free"
    split, said = _run(tmp_path / "split", ExplainCallback(num_probe=6, memory_guard=guard))
    whole, quiet = _run(tmp_path / "whole", ExplainCallback(num_probe=6, memory_guard=False))
    assert guard.chunk is not None and 1 <= guard.chunk < 6
    plans = [m for m in said if "in chunks of" in m]
    assert len(plans) == 1, said  # said once, not every epoch
    assert f"chunks of {guard.chunk} images" in plans[0]
    assert not quiet
    assert set(split) == set(whole) == {"explain/gradcam", "explain/saliency", "explain/activations"}
    for tag in whole:
        for (step_a, grid_a), (step_b, grid_b) in zip(split[tag], whole[tag], strict=True):
            assert step_a == step_b
            np.testing.assert_allclose(grid_a.astype(int), grid_b.astype(int), atol=1)


def test_cpu_has_no_free_memory_figure_so_the_default_guard_never_splits() -> None:
    guard = MemoryGuard()
    assert guard.plan(per_image=1e12, images=64, device=torch.device("cpu")) is None
    assert guard.chunk is None


class RunsOutAbove(TinyCNN):
    """A real CNN whose explained pass (eval mode, gradients on) raises CUDA's out-of-memory error above a batch."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and torch.is_grad_enabled() and x.shape[0] > self.most:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} images")
        return super().forward(x)


def test_out_of_memory_in_a_view_is_retried_in_halves(tmp_path: Path) -> None:
    callback = ExplainCallback(num_probe=6, memory_guard=MemoryGuard())
    images, said = _run(tmp_path, callback, RunsOutAbove(most=3))
    assert len(images["explain/gradcam"]) == 2  # both epochs logged
    retries = [m for m in said if "out of memory with 6 images per pass" in m]
    assert len(retries) == 1 and "chunks of 3 images" in retries[0], said
    assert callback._memory is not None and callback._memory.chunk == 3


def test_out_of_memory_twice_skips_the_view_with_the_cause(tmp_path: Path) -> None:
    callback = ExplainCallback(num_probe=6)
    images, said = _run(tmp_path, callback, RunsOutAbove(most=2))
    # epoch 0: 6 images run out, 3 run out again: skipped with the cause, training goes on; epoch 1: 3, then 1
    assert any("failed at epoch 0 (OutOfMemoryError: CUDA out of memory" in m for m in said), said
    assert [step for step, _ in images["explain/gradcam"]] == [5]
    assert any("chunks of 1 images" in m for m in said), said
    assert callback._memory is not None and callback._memory.chunk == 1


def test_explain_in_chunks_is_the_same_as_one_call() -> None:
    model = TinyCNN().eval()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = explain(model, x, "features.3")
    guard = MemoryGuard(free_memory=lambda device: None, chunk=2)
    parts = explain_in_chunks(lambda a, b: explain(model, x[a:b], "features.3"), 5, guard, print)
    for method in whole:
        torch.testing.assert_close(parts[method], whole[method])
    torch.testing.assert_close(parts.logits, whole.logits)
    assert parts.activation_channels is not None and parts.activation_channels.shape == (5, 3)
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        MemoryGuard(fraction=0.0)
