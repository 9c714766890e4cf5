"""LIME against a reference written from the paper (Ribeiro et al. 2016) with scikit-learn's weighted ridge, on a
model that is NOT linear in the on/off vector and that sees colour, so that each part of the method shows:

- the kernel ``exp(-d^2 / width^2)`` on the cosine distance to the all-ones vector (uniform weights give other
  surrogate weights when the score is not linear in ``z``);
- the default baseline, each channel's own mean (a grey global mean is another fill for a colourful image);
- the first sample, the image itself (all ones), which the kernel weighs most.

The reference draws the same on/off vectors (``torch.rand(samples, K) < 0.5`` from a generator of the same seed,
row 0 all ones) and does everything else itself; each variant is shown to move the weights far beyond the
tolerance of the comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_module
from torch import nn

from lightning_explain.functional import lime
from lightning_explain.functional.lime import grid_segments

SIZE, SEGMENTS, SAMPLES, SEED, TARGET = 16, 4, 48, 5, 1
#: A narrow kernel: the image itself (the first sample) weighs as much as ~50 half-masked samples.
WIDTH = 0.15
K = SEGMENTS * SEGMENTS


def _model() -> nn.Module:
    """Colour-sensitive and non-linear in the superpixels: a conv, a square, a max pool, a linear head."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(3)
    return nn.Sequential(conv, nn.Tanh(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(6 * 16, 3)).eval()


def _image() -> torch.Tensor:
    """A colourful image: each channel's mean far from the others' (red bright, blue dark)."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, SIZE, SIZE, generator=g) * 0.3
    image[:, 0] += 0.7
    image[:, 1] += 0.3
    return image


def _reference(model, image, *, kernel=True, channel_mean=True, first_is_image=True, width=WIDTH, ridge=1.0):
    """LIME by the paper: one weight per grid superpixel ``[K]``."""
    linear_model = require_module("sklearn.linear_model")
    labels = grid_segments(SIZE, SIZE, SEGMENTS)
    z = (torch.rand(SAMPLES, K, generator=torch.Generator().manual_seed(SEED)) < 0.5).double()
    if first_is_image:
        z[0] = 1
    fill = image.mean(dim=(2, 3), keepdim=True) if channel_mean else image.mean().expand(1, 3, 1, 1)
    keep = z.float()[:, labels][:, None]
    with torch.no_grad():
        scores = model(image * keep + fill * (1 - keep))[:, TARGET].double().numpy()
    zn = z.numpy()
    cosine = zn.sum(1) / (np.linalg.norm(zn, axis=1) * np.sqrt(K) + 1e-300)  # cos(z, 1); 0 for z = 0
    distance = 1 - cosine
    weights = np.exp(-(distance**2) / width**2) if kernel else np.ones(SAMPLES)
    fit = linear_model.Ridge(alpha=ridge, fit_intercept=True, solver="svd").fit(zn, scores, sample_weight=weights)
    return torch.from_numpy(fit.coef_)


def _weights(map_: torch.Tensor) -> torch.Tensor:
    """The one value per grid cell of a LIME map ``[H, W]``."""
    labels = grid_segments(SIZE, SIZE, SEGMENTS)
    per_cell = torch.stack([map_[labels == k].unique() for k in range(K)])
    assert per_cell.shape == (K, 1), "each superpixel holds one value"
    return per_cell[:, 0].double()


def test_lime_equals_the_paper_with_sklearns_weighted_ridge():
    model, image = _model(), _image()
    got = _weights(lime(model, image, TARGET, segments=SEGMENTS, samples=SAMPLES, seed=SEED, kernel_width=WIDTH)[0])
    expected = _reference(model, image)
    scale = float(expected.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-4 * scale, rtol=0)


@pytest.mark.parametrize("variant", ["kernel", "channel_mean", "first_is_image"])
def test_each_part_of_lime_moves_the_weights_on_this_model(variant):
    """The comparison above can fail: uniform weights, a global grey mean, or a random first sample is another
    answer on this model, by far more than that test's tolerance."""
    model, image = _model(), _image()
    expected = _reference(model, image)
    changed = _reference(model, image, **{variant: False})
    assert float((changed - expected).abs().max()) > 0.1 * float(expected.abs().max())  # measured >= 0.2


def test_kernel_width_and_ridge_reach_the_regression():
    model, image = _model(), _image()
    options = {"kernel_width": 0.6, "ridge": 0.1}
    got = _weights(lime(model, image, TARGET, segments=SEGMENTS, samples=SAMPLES, seed=SEED, **options)[0])
    expected = _reference(model, image, width=0.6, ridge=0.1)
    torch.testing.assert_close(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=0)
