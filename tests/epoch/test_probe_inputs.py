"""Models and inputs beyond the plain case: torch.compile, channels_last, gradient accumulation, batch size 1,
odd sizes, 1 and 4 channels, uint8 / float16 / bfloat16. Each works or fails at setup with a clear message."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import TinyCNN, assert_maps_agree, assert_overlay_cells, loaders, read_event_images, trainer
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback
from lightning_explain.functional import explain, grad_cam, saliency
from lightning_explain.output.render import to_display

TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}


def _fit(tmp_path: Path, model: nn.Module, cb: ExplainCallback, data=None, **kwargs):
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], **kwargs)
    t.fit(model, *(data or loaders()))
    return t, read_event_images(t.logger.log_dir)


# ------------------------------------------------------------------------------------------ torch.compile
# Backend "aot_eager": it traces through AOTAutograd like "inductor" (and shows the same wrong Grad-CAM when the
# probe runs inside the compiled graph) but skips C++ code generation, which takes ~20-35 s per run on this CPU.


def test_explain_of_a_compiled_model_equals_the_original():
    from torch._dynamo.utils import counters

    model = TinyCNN().eval()
    x = torch.rand(2, 3, 16, 16)
    reference = explain(model, x, "features.3")
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x)  # compile once, as training would
    graphs = counters["stats"]["unique_graphs"]
    out = explain(compiled, x, "features.3")  # the name without "_orig_mod." is found
    compiled(x)
    assert counters["stats"]["unique_graphs"] == graphs  # the probe pass caused no recompilation
    for key in ("gradcam", "saliency", "activations"):
        assert torch.equal(out[key], reference[key]), key
    assert out["gradcam"].amax() > 0  # inside the compiled graph it came out all zero


class _CompiledFeatures(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.compile(self.features, backend="aot_eager")


@pytest.mark.parametrize("where", ["module", "submodule"])
def test_compiled_models_in_a_trainer(tmp_path, where):
    torch.manual_seed(0)
    reference = TinyCNN()
    torch.manual_seed(0)
    model = _CompiledFeatures() if where == "submodule" else torch.compile(TinyCNN(), backend="aot_eager")
    for m in (reference, getattr(model, "_orig_mod", model)):
        m.head[2].p = 0.0  # no dropout: compiled dropout draws other random numbers, and the weights would differ
    _, ref_images = _fit(tmp_path / "ref", reference, ExplainCallback("features.3", num_probe=3))
    _, images = _fit(tmp_path / "compiled", model, ExplainCallback("features.3", num_probe=3, strict=True))
    assert set(images) == TAGS
    for tag in TAGS:
        assert [s for s, _ in images[tag]] == [2, 5]
    # Same weights, same maps: the probe ran through the original module, not the compiled graph.
    (_, grid), (_, ref_grid) = images["explain/gradcam"][0], ref_images["explain/gradcam"][0]
    assert abs(grid.astype(int) - ref_grid.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------ gradient accumulation


class _GradWatch(Callback):
    """Snapshots every param.grad when validation starts and compares them when it has ended (after the probe)."""

    def __init__(self) -> None:
        self.checks: list[tuple[int, bool, bool]] = []  # (global_step, grads present, bit-identical)
        self._before: list[torch.Tensor | None] = []

    def on_validation_start(self, trainer, pl_module) -> None:
        self._before = [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()]

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        after = [p.grad for p in pl_module.parameters()]
        same = all(
            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
            for a, b in zip(self._before, after, strict=True)
        )
        present = any(b is not None and bool(b.abs().sum() > 0) for b in self._before)
        self.checks.append((trainer.global_step, present, same))


def test_probe_pass_inside_an_accumulation_window_leaves_grad_bit_identical(tmp_path):
    def run(path: Path, with_callback: bool):
        torch.manual_seed(0)
        model, watch = TinyCNN(), _GradWatch()
        callbacks: list[Callback] = [watch] + ([ExplainCallback(num_probe=3)] if with_callback else [])
        t = trainer(
            path,
            logger=TensorBoardLogger(str(path), name="tb"),
            callbacks=callbacks,
            max_epochs=2,
            accumulate_grad_batches=4,
            val_check_interval=2,  # validation after batches 2, 4 and 6 of 6: the first falls mid-window
        )
        t.fit(model, *loaders(n=24, batch_size=4))
        return model, watch, t

    model, watch, t = run(tmp_path / "with", True)
    reference, _, _ = run(tmp_path / "without", False)
    images = read_event_images(t.logger.log_dir)["explain/gradcam"]
    assert len(images) == len(watch.checks) == 6  # a probe pass at every validation, 3 per epoch
    assert all(same for _, _, same in watch.checks)
    assert any(present for _, present, _ in watch.checks)  # some passes really ran mid-accumulation
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)  # and the trained weights are bit-identical to a run without the callback


def test_probe_pass_between_two_backward_calls_directly():
    from lightning_explain.capture import preserve_model_state

    torch.manual_seed(0)
    model = TinyCNN().train()
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 3, (8,))

    def step(i: int) -> None:
        torch.manual_seed(i)  # same dropout masks in both runs
        nn.functional.cross_entropy(model(x[4 * i : 4 * i + 4]), y[4 * i : 4 * i + 4]).backward()

    step(0)
    step(1)
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    step(0)
    half = [p.grad.clone() for p in model.parameters()]
    with preserve_model_state(model):
        out = explain(model, torch.rand(3, 3, 16, 16), "features.3", ("gradcam", "saliency", "gradcampp"))
    assert out["gradcam"].amax() > 0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), half, strict=True))
    assert model.training
    step(1)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), reference, strict=True))


# ------------------------------------------------------------------------------------------ layouts, sizes, dtypes


def _data(n: int = 8, channels: int = 3, size: tuple[int, int] = (16, 16), dtype=torch.float32, batch_size: int = 4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, *size, generator=g)
    x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
    ds = TensorDataset(x, torch.randint(0, 3, (n,), generator=g))
    return DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=batch_size)


def test_channels_last_model_and_inputs(tmp_path):
    def collate(samples):
        x, y = torch.utils.data.default_collate(samples)
        return x.contiguous(memory_format=torch.channels_last), y

    plain = TinyCNN().eval()
    model = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    probe = torch.rand(3, 3, 16, 16)
    reference = explain(plain, probe, "features.3")
    out = explain(model, probe.contiguous(memory_format=torch.channels_last), "features.3")
    for key in ("gradcam", "saliency"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-4)
    train, val = _data()
    train, val = (DataLoader(d.dataset, batch_size=4, collate_fn=collate) for d in (train, val))
    _, images = _fit(tmp_path, model.train(), ExplainCallback(num_probe=4), (train, val), max_epochs=1)
    assert set(images) == TAGS


@pytest.mark.parametrize(
    ("case", "channels", "size", "batch_size", "num_probe"),
    [
        ("grayscale", 1, (16, 16), 4, 4),
        ("four_channels", 4, (16, 16), 4, 4),
        ("odd_size", 3, (17, 23), 4, 4),
        ("tiny_size", 3, (5, 3), 4, 4),
        ("batch_size_1", 3, (16, 16), 1, 4),
        ("one_probe_image", 3, (16, 16), 4, 1),
    ],
)
def test_sizes_channels_and_batch_sizes_render(tmp_path, case, channels, size, batch_size, num_probe):
    cb = ExplainCallback(num_probe=num_probe, strict=True)
    _, images = _fit(
        tmp_path,
        TinyCNN(in_channels=channels),
        cb,
        _data(channels=channels, size=size, batch_size=batch_size),
        max_epochs=1,
    )
    assert set(images) == TAGS
    _, grid = images["explain/gradcam"][0]
    assert grid.shape[2] == 3 and grid.shape[0] > num_probe * 12  # RGB, a row per probe image
    assert cb._probe.images.shape == (num_probe, channels, *size)


class _Cast(TinyCNN):
    """A model that takes uint8 images and converts them itself."""

    def forward(self, x):
        return super().forward(x.float() / 255)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_on_cpu(tmp_path, dtype):
    model = TinyCNN().to(dtype)
    cb = ExplainCallback(num_probe=4, cell_size=32, strict=True)
    data = _data(dtype=dtype)
    _, images = _fit(tmp_path, model, cb, data, max_epochs=1)
    assert set(images) == TAGS
    model.eval()
    probe = data[1].dataset.tensors[0][:4]
    layer = cb.layer_choice.name  # the default layer, found on the probe
    cams, sal = grad_cam(model, probe, layer), saliency(model, probe)
    assert cams.dtype == sal.dtype == torch.float32
    # The logged cells show the half-precision model's maps ...
    assert_overlay_cells(images["explain/gradcam"][-1][1], to_display(probe), cams, cell_size=32, what="gradcam")
    assert_overlay_cells(images["explain/saliency"][-1][1], to_display(probe), sal, cell_size=32, what="saliency")
    # ... and those are the fp32 model's maps up to half-precision rounding (not merely finite).
    full, x = copy.deepcopy(model).float(), probe.float()
    assert_maps_agree(cams, grad_cam(full, x, layer), min_correlation=0.99, max_difference=0.1)
    assert_maps_agree(sal, saliency(full, x), min_correlation=0.95, max_difference=0.35)


class _ToFloat(TinyCNN):
    """A float32 model that converts half-precision inputs itself."""

    def forward(self, x):
        return super().forward(x.float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_to_a_float32_model(tmp_path, dtype):
    cb = ExplainCallback(num_probe=4, strict=True)
    _, images = _fit(tmp_path, _ToFloat(), cb, _data(dtype=dtype), max_epochs=1)
    assert set(images) == TAGS and cb._probe.images.dtype == dtype  # the probe is kept as the data gives it


def test_uint8_images_get_the_layer_methods_and_one_warning_naming_the_skipped_ones(tmp_path):
    """A model that converts its own uint8 images keeps training; Grad-CAM and activations are the maps of the
    images as given; saliency (a pixel gradient) is skipped with one warning that says why."""
    cb = ExplainCallback(num_probe=4, strict=True)
    with pytest.warns(UserWarning, match=r"dtype torch.uint8.*\['saliency'\] are skipped: they differentiate"):
        _, images = _fit(tmp_path, _Cast(), cb, _data(dtype=torch.uint8), max_epochs=1)
    assert set(images) == {"explain/gradcam", "explain/activations"}
    assert cb._probe.images.dtype == torch.uint8 and cb.layer_choice is not None
