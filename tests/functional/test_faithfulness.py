"""Faithfulness: deletion/insertion AUC against a direct loop, ROAD against pytorch-grad-cam, the callback's tags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, read_event_scalars, require_module, trainer
from torch import nn

from lightning_explain import ExplainCallback
from lightning_explain.capture import preserve_model_state
from lightning_explain.epoch.faithfulness_schedule import FAITHFULNESS_NAMES, Faithfulness
from lightning_explain.functional import explain
from lightning_explain.functional.faithfulness import deletion_insertion, impute, road


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    with torch.no_grad():
        model[-1].weight.mul_(20)  # probabilities that move when pixels change
    return model.eval()


def _direct_curves(model, images, maps, steps, fill):
    """Petsiuk et al.'s deletion and insertion, one image and one step at a time."""
    out = []
    for b in range(images.shape[0]):
        order = torch.argsort(maps[b].flatten(), descending=True)
        cls = int(model(images[b : b + 1]).argmax())
        n = maps[b].numel()
        deletion, insertion = [], []
        for s in range(steps + 1):
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[order[: round(s * n / steps)]] = True
            chosen = chosen.view(maps[b].shape)
            deleted = torch.where(chosen, fill[b], images[b])
            inserted = torch.where(chosen, images[b], fill[b])
            deletion.append(float(torch.softmax(model(deleted[None]), 1)[0, cls]))
            insertion.append(float(torch.softmax(model(inserted[None]), 1)[0, cls]))
        out.append((np.trapezoid(deletion, dx=1 / steps), np.trapezoid(insertion, dx=1 / steps)))
    return torch.tensor(out, dtype=torch.float32)


@torch.no_grad()
def test_deletion_and_insertion_auc_equal_a_direct_loop_for_both_baselines():
    model, images, maps = _model(), torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    mean = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    got = deletion_insertion(model, images, maps, steps=8, baseline="mean", batch_size=5)  # chunks span curves
    expected = _direct_curves(model, images, maps, 8, mean)
    torch.testing.assert_close(torch.stack([got["deletion_auc"], got["insertion_auc"]], 1), expected, atol=1e-5, rtol=0)
    # blur: the fill is the image blurred by a Gaussian (std 3 px here); deletion != insertion, both in [0, 1]
    blurred = deletion_insertion(model, images, maps, steps=8, baseline="blur", blur_sigma=3.0)
    assert not torch.allclose(blurred["deletion_auc"], got["deletion_auc"])
    assert all(((v >= 0) & (v <= 1)).all() for v in blurred.values())


@torch.no_grad()
def test_a_map_of_the_pixels_the_model_reads_is_faithful_and_its_reverse_is_not():
    """A model that reads only the top-left 4x4 corner: the corner map deletes fast and inserts fast."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)).eval()
    weight = torch.zeros(2, 3, 16, 16)
    weight[0, :, :4, :4], weight[1, :, :4, :4] = 0.05, -0.05
    model[1].weight.copy_(weight.flatten(1))
    model[1].bias.zero_()
    images = torch.randn(4, 3, 16, 16) * 0.1
    images[:, :, :4, :4] += 1.0  # class 0, from the corner
    images -= images.mean(dim=(2, 3), keepdim=True)  # the mean baseline says nothing (p = 0.5)
    corner = torch.zeros(4, 16, 16)
    corner[:, :4, :4] = 1.0
    corner += torch.rand(4, 16, 16) * 0.01  # an order within each region
    good = deletion_insertion(model, images, corner, steps=16, baseline="mean")
    bad = deletion_insertion(model, images, 1 - corner, steps=16, baseline="mean")
    assert (good["deletion_auc"] < bad["deletion_auc"] - 0.3).all()
    assert (good["insertion_auc"] > bad["insertion_auc"] + 0.3).all()
    morf, lerf = (road(model, images, corner, percentiles=(10, 30), order=o) for o in ("morf", "lerf"))
    assert (morf.mean(1) < lerf.mean(1) - 0.3).all()
    # constant maps have no order: NaN, and the global RNG is untouched by the private generator
    state = torch.get_rng_state()
    flat = deletion_insertion(model, images, torch.ones(4, 16, 16), steps=4)["deletion_auc"]
    assert torch.isnan(flat).all() and torch.equal(torch.get_rng_state(), state)


@torch.no_grad()
def test_road_matches_pytorch_grad_cam_road():
    road_module = require_module("pytorch_grad_cam.metrics.road")
    confidence = require_module("pytorch_grad_cam.metrics.perturbation_confidence")
    targets_module = require_module("pytorch_grad_cam.utils.model_targets")
    model, images, maps = _model(), torch.randn(3, 3, 20, 20), torch.rand(3, 20, 20)  # 400 px: same pixel counts
    classes = model(images).argmax(1)
    targets = [targets_module.ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    before = torch.softmax(model(images), 1).gather(1, classes[:, None])[:, 0].numpy()
    percentiles = (10, 30, 50, 70, 90)
    removers = {"morf": confidence.RemoveMostRelevantFirst, "lerf": confidence.RemoveLeastRelevantFirst}
    for order, remover in removers.items():
        mine = road(model, images, maps, percentiles=percentiles, order=order, noise=0.0, batch_size=4).numpy()
        theirs = np.stack(
            [
                confidence.PerturbationConfidenceMetric(remover(100 - p, road_module.NoisyLinearImputer(noise=0.0)))(
                    images, maps.numpy(), targets, model
                )
                for p in percentiles
            ],
            axis=1,
        )
        np.testing.assert_allclose(mine, theirs + before[:, None], atol=1e-4)  # noiseless: measured 3e-8
        assert np.ptp(mine) > 0.05  # the probabilities do move
    # with noise (0.01, theirs from the global RNG, ours from a private one): their averaged ROAD
    torch.manual_seed(0)
    mine = road(model, images, maps, percentiles=percentiles, order="morf").mean(1).numpy()
    theirs = road_module.ROADMostRelevantFirstAverage([100 - p for p in percentiles])(
        images, maps.numpy(), targets, model
    )
    # Measured 3.8e-4 (the two noise draws differ); where the noise lands is pinned in test_faithfulness_baselines.py.
    np.testing.assert_allclose(mine, theirs + before, atol=2e-3)


def test_imputation_solves_the_same_system_as_pytorch_grad_cam():
    road_module = require_module("pytorch_grad_cam.metrics.road")
    torch.manual_seed(0)
    image, removed = torch.randn(3, 20, 20), torch.rand(20, 20) > 0.3
    removed[8:16, 8:16] = True  # a large hole too
    theirs = road_module.NoisyLinearImputer(noise=0.0)(image, (~removed).float())
    torch.testing.assert_close(impute(image[None], removed[None])[0], theirs, atol=1e-4, rtol=0)


def test_faithfulness_options_are_checked_when_the_callback_is_built():
    assert Faithfulness.from_option(False) is None
    assert Faithfulness.from_option(True) == Faithfulness()
    with pytest.raises(ValueError, match="keys from"):
        ExplainCallback(faithfulness={"step": 4})
    with pytest.raises(ValueError, match="True, False or a dict"):
        ExplainCallback(faithfulness="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline"):
        ExplainCallback(faithfulness={"baseline": "zeros"})
    spec = Faithfulness.from_option({"every_n_epochs": 2})
    assert spec is not None and [spec.due(e) for e in range(4)] == [True, False, True, False]
    assert spec.due(3, fitting=False)  # validate() / test(): always


def test_callback_logs_every_faithfulness_tag_of_each_method(tmp_path):
    cb = ExplainCallback("features.3", num_probe=4, faithfulness={"max_images": 2, "steps": 4})
    run = trainer(tmp_path, callbacks=[cb])
    run.validate(TinyCNN(), loaders(n=8)[1])  # under validate() it is always due; fit: every_n_epochs (above)
    scalars = read_event_scalars(run.logger.log_dir)
    for method in ("gradcam", "saliency"):
        for name in FAITHFULNESS_NAMES:
            points = scalars[f"explain/{method}/faithfulness/{name}"]
            assert len(points) == 1 and np.isfinite(points[0][1]), (method, name)
    assert cb.latest_per_image["explain/gradcam/faithfulness/road_gap"].shape == (2,)  # the first 2 probe images


def test_scoring_leaves_the_model_and_the_rng_as_they_were():
    """What the callback runs: BatchNorm statistics, flags, grads and the global RNG are untouched."""
    model = TinyCNN().eval()
    model.features[0].train()  # a user's choice that must survive
    images = torch.rand(3, 3, 16, 16)
    result = explain(model, images, "features.3", ["gradcam"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with preserve_model_state(model):
        values = Faithfulness(steps=4, percentiles=(50,)).score(model, images, result, "explain", None)
    assert sorted(values) == sorted(f"explain/gradcam/faithfulness/{n}" for n in FAITHFULNESS_NAMES)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.features[0].training and not model.features[1].training
    assert all(p.grad is None for p in model.parameters())
