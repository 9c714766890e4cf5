"""FilterGrid, FeatureMaps and ErrorAttribution in real Trainer runs, read back from TensorBoard event files; and
every extra view together leaves training bit-identical."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyCNN, loaders, make_dataset, read_event_images, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_explain import (
    ActivationMaximization,
    ErrorAttribution,
    ExplainCallback,
    FeatureInversion,
    FeatureMaps,
    FilterGrid,
    TCAVCallback,
)
from lightning_explain.functional import grad_cam
from lightning_explain.output.render import CAPTION_HEIGHT
from lightning_explain.output.render_views import filter_grid


def _fit(tmp_path: Path, callbacks: list, model: pl.LightningModule | None = None, **kwargs):
    model = model or TinyCNN()
    train, val = kwargs.pop("loaders", None) or loaders()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    t = trainer(tmp_path, logger=logger, callbacks=callbacks, **kwargs)
    t.fit(model, train, val)
    return t, model


def _expected_filter_cells(weight: torch.Tensor) -> np.ndarray:
    w = weight.detach().float()
    w = (w - w.min()) / (w.max() - w.min())
    return (w * 255).round().to(torch.uint8).numpy()  # [O, 3, kh, kw]


# ------------------------------------------------------------------------------------------------ filters


def test_filter_grid_pixels_are_the_normalised_weights(tmp_path):
    model = TinyCNN()
    initial = model.features[0].weight.detach().clone()
    t, model = _fit(tmp_path, [FilterGrid(every_n_epochs=1, cell_size=32)], model=model, max_epochs=2)
    logged = read_event_images(t.logger.log_dir)["explain/filters/features.0"]
    assert [s for s, _ in logged] == [0, 2, 5]  # the initial filters, then every validation epoch
    for (_, grid), weight in ((logged[0], initial), (logged[-1], model.features[0].weight)):
        assert grid.shape == (2 + 30 + 2, 8 * 32 + 2, 3)  # 8 filters of 3x3 enlarged 10x, one row
        cells = _expected_filter_cells(weight)
        for c in range(8):
            cell = grid[2:32, 2 + c * 32 : 32 + c * 32]  # [30, 30, 3]
            expected = np.kron(cells[c].transpose(1, 2, 0), np.ones((10, 10, 1), dtype=np.uint8))
            assert np.array_equal(cell, expected), c
    assert not np.array_equal(logged[0][1], logged[-1][1])  # the filters moved


def test_filter_grid_grey_for_one_channel_and_per_filter_scale():
    w = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
    grid = filter_grid(w, scale="filter", cell_size=2)
    assert grid.shape == (3, 2 + 2 + 2, 2 * 4 + 2)
    first = grid[:, 2:4, 2:4]
    assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])  # grey
    assert first[0].tolist() == [[0, 85], [170, 255]]  # each filter min-max scaled on its own


def test_filter_grid_rejects_a_layer_that_does_not_read_images(tmp_path):
    with pytest.raises(ValueError, match="1 or 3 input"):
        _fit(tmp_path, [FilterGrid("features.3")], max_epochs=1)
    with pytest.raises(ValueError, match="1 or 3 input"):
        _fit(tmp_path, [FilterGrid("features.1")], max_epochs=1)  # BatchNorm


# ------------------------------------------------------------------------------------------------ feature maps


def test_feature_maps_equal_a_direct_forward_hook(tmp_path):
    cb = FeatureMaps(["features.0", "features.3"], num_images=2, max_channels=4, colormap="gray", cell_size=64)
    t, model = _fit(tmp_path, [cb], max_epochs=1)
    images = read_event_images(t.logger.log_dir)
    probe = make_dataset(24, seed=2).tensors[0][:2]
    model.eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.features[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"features.{i}", o.clone()))
        for i in (0, 3)
    ]
    with torch.no_grad():
        model(probe)
    for h in hooks:
        h.remove()
    for name, act in seen.items():
        a = act[:, :4]
        low, high = a.amin((2, 3), keepdim=True), a.amax((2, 3), keepdim=True)
        expected = (a - low) / (high - low)
        assert torch.allclose(cb.latest_maps[name], expected, atol=1e-5), name
        (_, grid), *_ = images[f"explain/feature_maps/{name}"]
        assert grid.shape == (2 * (CAPTION_HEIGHT + 66) + 2, 5 * 66 + 2, 3)  # 2 rows; input + 4 channels
        big = F.interpolate(expected, size=(64, 64), mode="nearest")
        for row in range(2):
            for ch in range(4):
                top, left = 2 + row * (CAPTION_HEIGHT + 66) + CAPTION_HEIGHT, 2 + (1 + ch) * 66
                cell = grid[top : top + 64, left : left + 64, 0].astype(int)
                assert np.abs(cell - (big[row, ch] * 255).round().numpy()).max() <= 1, (name, row, ch)


def test_feature_maps_default_layers_are_first_and_last_conv(tmp_path):
    t, _ = _fit(tmp_path, [FeatureMaps()], max_epochs=1)
    assert set(read_event_images(t.logger.log_dir)) == {
        "explain/feature_maps/features.0",
        "explain/feature_maps/features.3",
    }


# ------------------------------------------------------------------------------------------------ errors


def _brute_force_confused(model: nn.Module, k: int) -> tuple[list[int], torch.Tensor]:
    x, y = make_dataset(24, seed=2).tensors
    model.eval()
    with torch.no_grad():
        probs = model(x).softmax(1)
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:k]
    return order.tolist(), conf[order]


def test_error_grid_shows_predicted_and_true_class_maps(tmp_path):
    cb = ErrorAttribution("features.3", num_probe=8, num_confused=5, alpha=1.0, colormap="gray", cell_size=64)
    t, model = _fit(tmp_path, [cb], max_epochs=2)
    images = read_event_images(t.logger.log_dir)
    assert set(images) == {"explain/errors/probe", "explain/errors/most_confused"}
    probe_x, probe_y = (v[:8] for v in make_dataset(24, seed=2).tensors)
    model.eval()
    with torch.no_grad():
        pred = model(probe_x).argmax(1)
    wrong = torch.nonzero(pred != probe_y).flatten()
    assert 0 < wrong.numel() < 8
    assert float(t.callback_metrics["explain/errors/probe_error_rate"]) == pytest.approx(wrong.numel() / 8)
    _, grid = images["explain/errors/probe"][-1]
    row_h = CAPTION_HEIGHT + 66
    assert grid.shape == (wrong.numel() * row_h + 2, 3 * 66 + 2, 3)  # input | predicted-class map | true-class map
    x = probe_x[wrong]
    for col, classes in ((1, pred[wrong]), (2, probe_y[wrong])):
        maps = grad_cam(model, x, "features.3", classes)
        big = F.interpolate(maps[:, None], size=(64, 64), mode="nearest")[:, 0]
        for r in range(wrong.numel()):
            top, left = 2 + r * row_h + CAPTION_HEIGHT, 2 + col * 66
            cell = grid[top : top + 64, left : left + 64, 0].astype(int)
            assert np.abs(cell - (big[r] * 255).round().numpy()).max() <= 1, (col, r)
    # the two maps differ where the classes differ (the test would pass trivially otherwise)
    assert not torch.allclose(
        grad_cam(model, x, "features.3", pred[wrong]), grad_cam(model, x, "features.3", probe_y[wrong])
    )


def test_most_confused_are_the_k_most_confident_wrong_validation_examples(tmp_path):
    cb = ErrorAttribution("features.3", num_probe=4, num_confused=5)
    t, model = _fit(tmp_path, [cb], max_epochs=2)
    indices, conf = _brute_force_confused(model, 5)
    assert cb.most_confused.indices.tolist() == indices
    assert torch.allclose(cb.most_confused.confidence, conf, atol=1e-6)
    x, y = make_dataset(24, seed=2).tensors
    assert torch.equal(cb.most_confused.images, x[indices])
    assert torch.equal(cb.most_confused.labels, y[indices])
    _, grid = read_event_images(t.logger.log_dir)["explain/errors/most_confused"][-1]
    assert grid.shape[0] == 5 * (CAPTION_HEIGHT + 130) + 2


def test_error_attribution_default_layer_is_explain_callbacks_found_on_the_probe(tmp_path):
    """No target_layer: the same layer ExplainCallback finds by running the model (the feature stage after its
    in-place ReLU), not the last Conv2d inside it."""
    cb, explained = ErrorAttribution(num_probe=4, num_confused=0), ExplainCallback(num_probe=4, methods=("gradcam",))
    _fit(tmp_path, [cb, explained], max_epochs=1)
    assert cb._layer_name == explained.layer_choice.name == "features"


class _Wrapped(TinyCNN):
    """validation_step calls a submodule, not self(x): no logits to reuse, so the callback runs its own forward."""

    def __init__(self, returns_logits: bool = False) -> None:
        super().__init__()
        self.returns_logits = returns_logits

    def validation_step(self, batch, batch_idx):
        logits = self.head(self.features(batch[0]))
        return logits if self.returns_logits else None


@pytest.mark.parametrize(("returns_logits", "max_batches", "seen"), [(True, 1, 24), (False, None, 24), (False, 1, 8)])
def test_most_confused_without_a_forward_hook(tmp_path, returns_logits, max_batches, seen):
    cb = ErrorAttribution("features.3", num_probe=2, num_confused=24, max_batches=max_batches)
    _, model = _fit(tmp_path, [cb], model=_Wrapped(returns_logits), max_epochs=1)
    x, y = make_dataset(24, seed=2).tensors
    model.eval()
    with torch.no_grad():
        wrong = set(torch.nonzero(model(x[:seen]).argmax(1) != y[:seen]).flatten().tolist())
    assert set(cb.most_confused.indices.tolist()) == wrong  # top_k = everything: exactly the wrong ones seen


def test_error_attribution_arguments():
    with pytest.raises(ValueError, match="single-map"):
        ErrorAttribution(method="activations")
    with pytest.raises(ValueError, match="probe_labels"):
        ErrorAttribution(probe=torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="top_k"):
        ErrorAttribution(top_k=-1)


# ------------------------------------------------------------------------------------------------ all together


RED = torch.zeros(8, 3, 16, 16)
RED[:, 0] = 1.0


def _all_views() -> list[pl.Callback]:
    return [
        ErrorAttribution("features.3", num_probe=6, num_confused=3),
        FilterGrid(),
        FeatureMaps(num_images=2, max_channels=4),
        TCAVCallback(
            "features.3", {"red": "test_views:RED"}, num_random=2, set_size=4, num_class_examples=16, cav_steps=20
        ),
        FeatureInversion("features.3", every_n_epochs=1, steps=3, progress=False),
        ActivationMaximization({"features.3": [0]}, classes=[1], every_n_epochs=1, steps=2),
    ]


def test_training_is_bit_identical_with_and_without_every_view(tmp_path):
    def run(callbacks):
        pl.seed_everything(7)
        model = TinyCNN()
        train = DataLoader(make_dataset(32, seed=1), batch_size=8, shuffle=True)
        val = DataLoader(make_dataset(16, seed=2), batch_size=8)
        t, _ = _fit(tmp_path / str(bool(callbacks)), callbacks, model=model, loaders=(train, val), max_epochs=2)
        return t, model.state_dict(), torch.rand(3)

    t, with_cb, rng_with = run(_all_views())
    _, without, rng_without = run([])
    for key in with_cb:
        assert torch.equal(with_cb[key], without[key]), key
    assert torch.equal(rng_with, rng_without)
    tags = set(read_event_images(t.logger.log_dir))
    assert {"explain/filters/features.0", "explain/feature_maps/features.0", "explain/inversion/features.3"} <= tags
    assert "explain/activation_max/classes" in tags
    assert "explain/tcav/red/0/score" in t.callback_metrics or "explain/tcav/red/1/score" in t.callback_metrics


def test_views_survive_a_state_dict_roundtrip():
    cb = FeatureMaps(probe=torch.rand(3, 3, 8, 8))
    state = copy.deepcopy(cb.state_dict())
    other = FeatureMaps()
    other.load_state_dict(state)
    assert other._probe is not None and torch.equal(other._probe.images, state["probe_images"])
    other.load_state_dict({})  # older checkpoints without the keys load


def test_every_view_runs_under_trainer_validate_in_inference_mode(tmp_path):
    _, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=_all_views())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a view that failed would warn
        warnings.filterwarnings("ignore", message=".*(workers|LeafSpec|logging interval).*")
        t.validate(TinyCNN(), val)
    tags = set(read_event_images(t.logger.log_dir))
    assert {
        "explain/errors/probe",
        "explain/errors/most_confused",
        "explain/feature_maps/features.3",
        "explain/filters/features.0",
        "explain/inversion/features.3",
        "explain/activation_max/features.3",
        "explain/activation_max/classes",
    } <= tags
    assert any(k.startswith("explain/tcav/red/") for k in t.callback_metrics)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": [0.5, 0.5], "std": [0.2]}, "mean has 2 values but std has 1"),
        ({"mean": [0.5], "std": [0.0]}, r"std values must be > 0"),
        ({"colormap": "nope"}, "colormap 'nope' is not a matplotlib colour map"),
        ({"cell_size": 4}, "cell_size must be >= 8 pixels"),
        ({"num_probe": 0}, "num_probe must be an integer >= 1; got 0"),
    ],
)
def test_views_check_display_arguments_like_explain_callback(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureMaps(**kwargs)
