"""Feature inversion: the optimisation works, the prior does its job, the model is untouched, progress shows."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, loaders, read_event_images, trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_explain import FeatureInversion
from lightning_explain.functional import invert_features, total_variation


def _model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    model.train()  # the function must put it in eval and restore this
    model.features[1].eval()  # a user-frozen submodule stays in eval
    return model


def test_loss_decreases_and_features_get_closer():
    model = _model()
    image = torch.rand(2, 3, 16, 16)
    out = invert_features(model, "features.3", image, steps=60, lr=0.05, tv_weight=0.1, progress=False)
    assert out.image.shape == image.shape
    assert len(out.losses) == 60
    assert out.losses[-1] < 0.5 * out.losses[0]
    assert (out.final_distance < 0.7 * out.initial_distance).all()


def test_tv_weight_lowers_total_variation():
    model = _model()
    image = torch.rand(1, 3, 16, 16)
    rough = invert_features(model, "features.3", image, steps=40, tv_weight=0.0, progress=False)
    smooth = invert_features(model, "features.3", image, steps=40, tv_weight=5.0, progress=False)
    assert float(total_variation(smooth.image)) < 0.5 * float(total_variation(rough.image))


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [1.0, 3.0]]]])
    # vertical diffs 1, 2 -> mean of squares 2.5; horizontal 1, 2 -> 2.5
    assert total_variation(x).tolist() == [5.0]


def test_model_is_untouched_and_the_global_rng_is_not_used():
    model = _model()
    model.features[0].weight.grad = torch.full_like(model.features[0].weight, 0.25)
    model.head[-1].weight.requires_grad_(False)
    grad = model.features[0].weight.grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    image = torch.rand(1, 3, 16, 16)
    rng = torch.get_rng_state()
    invert_features(model, "features.3", image, steps=5, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert model.features[0].weight.grad is grad and torch.equal(grad, torch.full_like(grad, 0.25))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "features.0.weight")
    assert not model.head[-1].weight.requires_grad and model.features[0].weight.requires_grad
    assert all(not m._forward_hooks for m in model.modules())


def test_progress_bar_shows_and_can_be_turned_off(capsys):
    model = _model()
    invert_features(model, "features.0", torch.rand(1, 3, 8, 8), steps=3, progress=True)
    assert "feature inversion" in capsys.readouterr().err
    invert_features(model, "features.0", torch.rand(1, 3, 8, 8), steps=3, progress=False)
    captured = capsys.readouterr()
    assert "feature inversion" not in captured.err + captured.out


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        invert_features(_model(), "features.0", torch.rand(1, 3, 8, 8), steps=0)
    with pytest.raises(ValueError, match="does not exist"):
        invert_features(_model(), "nope", torch.rand(1, 3, 8, 8), steps=1, progress=False)


def test_callback_logs_reconstructions_every_n_epochs(tmp_path):
    cb = FeatureInversion("features.3", image_indices=[0, 2], every_n_epochs=2, steps=10, cell_size=32)
    train, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=3)
    t.fit(TinyCNN(), train, val)
    images = read_event_images(t.logger.log_dir)
    assert [s for s, _ in images["explain/inversion/features.3"]] == [2, 8]  # epochs 0 and 2
    _, grid = images["explain/inversion/features.3"][-1]
    assert grid.shape[:2] == (2 * (12 + 32 + 2) + 2, 2 * 34 + 2)  # 2 rows (caption band + cell), 2 columns
    assert float(t.callback_metrics["explain/inversion/features.3/feature_distance"]) < 1.0
    assert len(cb.latest_losses) == 10
