"""The fills of the faithfulness tests against references: the ``"blur"`` baseline is SciPy's Gaussian filter of the
same sigma (truncated at ``ceil(3 sigma)`` pixels, borders replicated), and ROAD's noise lands on the imputed pixels
only (``functional/faithfulness.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import require_module
from torch import nn

from lightning_explain.functional.faithfulness import deletion_insertion_curves, impute, road

H, W = 16, 20  # not square: a transposed kernel or border shows


def _linear_model() -> nn.Module:
    """Every pixel moves the logits: any change of the fill changes the probabilities."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * H * W, 3))
    with torch.no_grad():
        model[1].weight.mul_(30)
    return model.eval()


def _scipy_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    ndimage = require_module("scipy.ndimage")
    radius = max(1, math.ceil(3 * sigma))
    out = np.stack(
        [
            [ndimage.gaussian_filter(channel, sigma, mode="nearest", radius=radius) for channel in image]
            for image in images.double().numpy()
        ]
    )
    return torch.from_numpy(out).float()


def _probability(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(x), 1).gather(1, classes[:, None])[:, 0]


@torch.no_grad()
@pytest.mark.parametrize("sigma", [1.5, 2.3, None])  # None: a tenth of the shorter side (1.6 px)
def test_blur_baseline_is_scipys_gaussian_filter(sigma):
    model = _linear_model()
    images, maps = torch.rand(2, 3, H, W), torch.rand(2, H, W)
    classes = model(images).argmax(1)
    fill = _scipy_blur(images, H / 10 if sigma is None else sigma)
    steps = 4
    deletion, insertion = deletion_insertion_curves(model, images, maps, steps=steps, baseline="blur", blur_sigma=sigma)
    order = maps.flatten(1).argsort(1, descending=True)
    for s in range(steps + 1):
        chosen = torch.zeros(2, H * W, dtype=torch.bool)
        chosen.scatter_(1, order[:, : round(s * H * W / steps)], True)
        chosen = chosen.view(2, 1, H, W)
        expected_deletion = _probability(model, torch.where(chosen, fill, images), classes)
        expected_insertion = _probability(model, torch.where(chosen, images, fill), classes)
        torch.testing.assert_close(deletion[:, s], expected_deletion, atol=1e-5, rtol=0)
        torch.testing.assert_close(insertion[:, s], expected_insertion, atol=1e-5, rtol=0)
    # The comparison can fail: the mean baseline, or a blur of another sigma, is another curve.
    other = _scipy_blur(images, 2 * (H / 10 if sigma is None else sigma))
    assert (_probability(model, other, classes) - deletion[:, -1]).abs().max() > 1e-3


@torch.no_grad()
def test_road_noise_lands_on_the_imputed_pixels_only():
    model = _linear_model()
    images, maps = torch.rand(3, 3, H, W), torch.rand(3, H, W)
    classes = model(images).argmax(1)
    before = _probability(model, images, classes)
    # Nothing removed (0 %): the image itself, to float precision, with noise or without.
    for order in ("morf", "lerf"):
        kept = road(model, images, maps, percentiles=(0,), order=order, noise=0.05)[:, 0]
        torch.testing.assert_close(kept, before, atol=1e-6, rtol=0)
    # Half removed: the noise is there, and without it ROAD scores the linear imputation of the removed pixels.
    noiseless = road(model, images, maps, percentiles=(50,), noise=0.0)[:, 0]
    noisy = road(model, images, maps, percentiles=(50,), noise=0.05)[:, 0]
    assert (noisy - noiseless).abs().max() > 1e-4  # the noise is there
    removed = maps.flatten(1).argsort(1, descending=True).argsort(1) < round(0.5 * H * W)
    removed = removed.view(3, H, W)
    filled = impute(images, removed)
    torch.testing.assert_close(_probability(model, filled, classes), noiseless, atol=1e-5, rtol=0)


@torch.no_grad()
def test_noisy_road_equals_pytorch_grad_cams_where_the_model_reads_no_removed_pixel():
    """Both implementations add noise (0.01) to the imputed pixels only, from different random streams: with a model
    blind to every pixel that is removed, both give the image's own probability, to float precision. Noise on the
    kept pixels too would move it by ~1e-2."""
    road_module = require_module("pytorch_grad_cam.metrics.road")
    targets_module = require_module("pytorch_grad_cam.utils.model_targets")
    model = _linear_model()
    model[1].weight.view(3, 3, H, W)[..., W // 2 :] = 0  # reads the left half only
    images, maps = torch.rand(3, 3, H, W), torch.rand(3, H, W)
    maps[..., W // 2 :] += 1  # the right half ranks first: MoRF up to 50 % removes only pixels the model ignores
    classes = model(images).argmax(1)
    before = _probability(model, images, classes).numpy()
    percentiles = (10, 30, 50)
    mine = road(model, images, maps, percentiles=percentiles, order="morf").mean(1).numpy()
    targets = [targets_module.ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    theirs = road_module.ROADMostRelevantFirstAverage([100 - p for p in percentiles])(
        images, maps.numpy(), targets, model
    )
    np.testing.assert_allclose(mine, theirs + before, atol=1e-5)
    np.testing.assert_allclose(mine, before, atol=1e-5)
