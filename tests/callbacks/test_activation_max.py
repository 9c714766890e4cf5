"""Activation maximisation: the target rises, the model and the global RNG are untouched, the start is seeded, bad
layers and indices fail at setup, the callback logs captioned grids read back from TensorBoard."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, loaders, read_event_images, read_event_scalars, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_explain import ActivationMaximization
from lightning_explain.functional import count_units, maximize_activation
from lightning_explain.functional.activation_max import fourier_scale
from lightning_explain.functional.progress import reporting

SHAPE = (3, 16, 16)


def _model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    model.train()  # the function must put it in eval and restore this
    model.features[1].eval()  # a user-frozen submodule stays in eval
    return model


MEAN, STD = [0.5, 0.5, 0.5], [0.1, 0.1, 0.1]


def _random_inputs() -> Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(64, *SHAPE, generator=g) - 0.5) / 0.1


def test_channel_activation_rises_far_above_its_start_and_beats_random_inputs():
    kwargs = {"input_shape": SHAPE, "steps": 30, "lr": 0.1, "jitter": 1, "mean": MEAN, "std": STD}
    out = maximize_activation(_model(), "features.3", [0, 5, 9], **kwargs)
    assert out.images.shape == out.pixels.shape == (3, *SHAPE)
    assert float(out.pixels.min()) >= 0 and float(out.pixels.max()) <= 1
    with torch.no_grad():
        conv = _model().eval().features[:4]  # the conv's output, before the in-place ReLU
        random = conv(_random_inputs())[:, [0, 5, 9]].mean((2, 3))
        reached = conv(out.images)[[0, 1, 2], [0, 5, 9]].mean((1, 2))
    assert torch.allclose(reached, out.final, atol=1e-5)  # the value reported is the returned image's
    spread = random.std(0)
    assert ((out.final - out.initial) > 3 * spread).all(), (out.initial, out.final, spread)
    assert (out.final > random.max(0).values).all(), (out.final, random.max(0).values)
    assert len(out.history) == 30 and out.history[-1] > out.history[0]


def test_pixel_parametrisation_without_jitter_rises_further():
    kwargs = {"input_shape": SHAPE, "steps": 20, "lr": 0.1, "jitter": 0, "fourier": False, "mean": MEAN, "std": STD}
    out = maximize_activation(_model(), "features.3", [0, 5, 9], **kwargs)
    with torch.no_grad():
        random = _model().eval().features[:4](_random_inputs())[:, [0, 5, 9]].mean((2, 3))
    assert (out.final > 1.0).all() and (out.final > random.max(0).values + 5 * random.std(0)).all(), out.final


def test_class_logit_rises_and_mean_std_normalise_the_input():
    out = maximize_activation(
        _model(), classes=[0, 2], input_shape=SHAPE, steps=30, lr=0.1, jitter=1, mean=MEAN, std=STD
    )
    with torch.no_grad():
        random = _model().eval()(_random_inputs())[:, [0, 2]]
    assert ((out.final - out.initial) > 3 * random.std(0)).all(), (out.initial, out.final, random.std(0))
    assert (out.final > random.max(0).values).all()
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out.images, (out.pixels - m) / s, atol=1e-6)
    logits = _model().eval()(out.images)
    assert torch.allclose(logits[[0, 1], [0, 2]], out.final, atol=1e-5)


def test_model_is_untouched_and_the_global_rng_is_not_used():
    model = _model()
    model.features[0].weight.grad = torch.full_like(model.features[0].weight, 0.25)
    model.head[-1].weight.requires_grad_(False)
    grad = model.features[0].weight.grad
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats included
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    maximize_activation(model, "features.0", [1], input_shape=SHAPE, steps=3)
    maximize_activation(model, classes=[1], input_shape=SHAPE, steps=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert model.features[0].weight.grad is grad and torch.equal(grad, torch.full_like(grad, 0.25))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "features.0.weight")
    assert not model.head[-1].weight.requires_grad and model.features[0].weight.requires_grad
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_seeded_start_is_reproducible_whatever_the_global_rng():
    def run(seed: int, global_seed: int) -> Tensor:
        torch.manual_seed(global_seed)
        return maximize_activation(_model(), "features.3", [2], input_shape=SHAPE, steps=5, seed=seed).pixels

    a = run(seed=3, global_seed=0)
    assert torch.equal(a, run(seed=3, global_seed=123))
    assert not torch.equal(a, run(seed=4, global_seed=0))


def test_fourier_scale_favours_low_frequencies_and_has_unit_rms():
    s = fourier_scale(16, 12, decay_power=1.0)
    assert s.shape == (16, 7)
    assert float(s.pow(2).mean()) == pytest.approx(1.0)
    assert float(s[0, 0]) > float(s[0, 1]) > float(s[0, 6]) and float(s[1, 1]) < float(s[0, 1])
    assert torch.allclose(fourier_scale(8, 8, decay_power=0.0), torch.ones(8, 5))


class _ChannelsLast(nn.Module):
    """A stage that outputs [B, H, W, C] (as timm's Swin does)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.conv(x).permute(0, 2, 3, 1))
        return self.head(h.mean((1, 2)))


def test_channels_last_layer_is_read_by_its_layout():
    torch.manual_seed(0)
    model = _ChannelsLast()
    assert count_units(model, "norm", input_shape=SHAPE) == 6
    out = maximize_activation(model, "norm", [4], input_shape=SHAPE, steps=20, lr=0.1)
    with torch.no_grad():
        value = model.norm(model.conv(out.images).permute(0, 2, 3, 1))[..., 4].mean()
    assert float(value) == pytest.approx(float(out.final[0]), abs=1e-5)
    assert float(out.final[0]) > float(out.initial[0]) + 0.5


def test_progress_is_announced():
    seen = []

    class Record:
        def start(self, description, total):
            seen.append((description, total))
            return self

        def update(self, n):
            seen.append(n)

        def close(self):
            seen.append("closed")

    with reporting(Record()):
        maximize_activation(_model(), classes=[0], input_shape=SHAPE, steps=3)
    assert seen == [("activation maximisation", 3), 1, 1, 1, "closed"]


def test_bad_arguments_name_the_fix():
    model = _model()
    with pytest.raises(ValueError, match=r"layer 'features.3' has 16 units .*\[16\] are out of range"):
        maximize_activation(model, "features.3", [0, 16], input_shape=SHAPE, steps=1)
    with pytest.raises(ValueError, match="the model has 3 units"):
        maximize_activation(model, classes=[3], input_shape=SHAPE, steps=1)
    with pytest.raises(ValueError, match="does not exist"):
        maximize_activation(model, "nope", [0], input_shape=SHAPE, steps=1)
    with pytest.raises(ValueError, match="not both"):
        maximize_activation(model, "features.3", [0], classes=[0], input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"input_shape must be \[C, H, W\]"):
        maximize_activation(model, classes=[0], input_shape=(16, 16))
    with pytest.raises(ValueError, match="got neither"):
        ActivationMaximization()
    with pytest.raises(ValueError, match=r"channels\['x'\] must be a non-empty list"):
        ActivationMaximization({"x": []})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": {"features.9": [0]}}, "does not exist"),
        ({"channels": {"features.3": [2, 16]}}, r"\[16\], but layer 'features.3' outputs 16 channels.*0\.\.15"),
        ({"classes": [1, 3]}, r"classes has indices \[3\], but the model scores 3 classes"),
    ],
    ids=["layer", "channel", "class"],
)
def test_callback_fails_before_training_with_the_fix(kwargs, match, tmp_path):
    model = TinyCNN()
    first = model.features[0].weight.detach().clone()
    cb = ActivationMaximization(**kwargs, steps=2)
    train, val = loaders()
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, logger=False, callbacks=[cb]).fit(model, train, val)
    assert torch.equal(model.features[0].weight, first)  # not one training step


def test_callback_logs_captioned_grids_every_n_epochs(tmp_path):
    cb = ActivationMaximization(
        {"features.3": [0, 1, 2]}, classes=[0, 1], every_n_epochs=2, steps=4, columns=2, cell_size=32
    )
    train, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=3)
    t.fit(TinyCNN(), train, val)
    images = read_event_images(t.logger.log_dir)
    layer, classes = images["explain/activation_max/features.3"], images["explain/activation_max/classes"]
    assert [s for s, _ in layer] == [s for s, _ in classes] == [2, 8]  # epochs 0 and 2
    band, cell, pad = 12, 32, 2
    assert layer[-1][1].shape[:2] == (2 * (band + cell + pad) + pad, 2 * (cell + pad) + pad)  # 3 cells in 2 x 2
    assert classes[-1][1].shape[:2] == (band + cell + 2 * pad, 2 * (cell + pad) + pad)
    blank = layer[-1][1][band + cell + pad + band + pad :, cell + 2 * pad :][:cell, :cell]  # 4th cell: empty
    assert (blank == 255).all()
    out = cb.latest["explain/activation_max/features.3"]
    assert out.pixels.shape == (3, 3, 16, 16)  # the validation sample's shape
    scalars = read_event_scalars(t.logger.log_dir)
    reached = scalars["explain/activation_max/features.3/activation"]
    assert reached[-1][1] == pytest.approx(float(out.final.mean()), rel=1e-5)
    assert "explain/activation_max/classes/logit" in scalars
