"""The trust metrics (functional/trust.py) against Quantus 0.6 and scikit-image on real torchvision models, plus
hand-computed edge cases. Tolerances: 1e-5 (float32 maps; Quantus's own epsilons are 1e-7 and 1e-12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from conftest import require_module
from torch import nn

from lightning_explain.functional import explain
from lightning_explain.functional.trust import (
    complexity,
    faithfulness_correlation,
    map_similarity,
    model_randomisation,
    random_logit,
    randomisation_order,
    randomised,
    rank_similarity,
    sensitivity,
    sparseness,
    ssim,
)

quantus = require_module("quantus")
skimage_metrics = require_module("skimage.metrics")

TOL = 1e-5


@pytest.fixture(autouse=True)
def _trapz(monkeypatch):
    # Quantus 0.6 calls np.trapz, removed in NumPy 2.4; np.trapezoid is the same function under its new name.
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def _squeezenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.squeezenet1_1(num_classes=3).eval()


def _vgg() -> nn.Module:
    """torchvision's VGG-11 with BatchNorm and a small head (the stock head has 100M weights)."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=3)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(512, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))
    return model.eval()


def _alexnet() -> nn.Module:
    """torchvision's AlexNet with a small head, for 64 px images."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=3)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(256, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))
    return model.eval()


MODELS = {"squeezenet1_1": _squeezenet, "vgg11_bn": _vgg}
#: Randomising SqueezeNet's last conv makes every saliency map zero, which Quantus refuses (an assert).
MPRT_MODELS = {"alexnet": (_alexnet, 64, 2), "vgg11_bn": (_vgg, 32, 1)}


def _saliency(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return explain(model, x, None, ["saliency"], classes)["saliency"]


def _quantus_explain(model, inputs, targets, **_):
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    return _saliency(model, x, torch.as_tensor(np.asarray(targets))).numpy()[:, None]


def _images(n: int = 2, channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------------------------- similarity


def test_ssim_equals_scikit_image_in_2d_and_quantus_on_flattened_maps():
    a, b = torch.rand(3, 16, 20), torch.rand(3, 16, 20)
    b[0] = a[0] * 0.5 + b[0] * 0.5
    ours = ssim(a, b)
    for i in range(3):
        x, y = a[i].double().numpy(), b[i].double().numpy()
        rng = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        assert ours[i].item() == pytest.approx(skimage_metrics.structural_similarity(x, y, data_range=rng), abs=TOL)
    # Quantus's MPRT and RandomLogit flatten the maps first: SSIM along one axis, a different number. Pin both.
    flat = quantus.similarity_func.ssim(a.flatten(1).double().numpy(), b.flatten(1).double().numpy(), batched=True)
    assert ssim(a.flatten(1)[:, None], b.flatten(1)[:, None]).numpy() == pytest.approx(np.asarray(flat), abs=TOL)
    assert not np.allclose(ours.numpy(), flat, atol=1e-3)


def test_similarity_of_constant_maps_has_a_defined_value():
    a = torch.arange(64.0).reshape(1, 8, 8)
    zero = torch.zeros(1, 8, 8)
    assert rank_similarity(a, zero).item() == 0.0  # no rank order left: no agreement (scipy/Quantus: NaN)
    assert math.isnan(rank_similarity(zero, zero).item())  # nothing to compare
    sim = map_similarity(a, zero)
    assert sim["spearman"].item() == 0.0 and math.isfinite(sim["ssim"].item())
    assert math.isnan(map_similarity(zero, zero)["ssim"].item())
    nan = torch.full((1, 8, 8), float("nan"))
    assert math.isnan(map_similarity(a, nan)["spearman"].item()) and math.isnan(map_similarity(a, nan)["ssim"].item())


# --------------------------------------------------------------------------------------------- randomisation


@pytest.mark.parametrize("name", list(MPRT_MODELS))
def test_mprt_equals_quantus_cascade(name):
    build, size, n = MPRT_MODELS[name]
    model, x = build(), _images(n, size=size)
    y = model(x).argmax(1)
    maps = _saliency(model, x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    ours = model_randomisation(_saliency, model, x, y, maps, steps=None, seed=43)
    assert torch.equal(torch.get_rng_state(), rng)  # the re-initialisation drew from a forked RNG
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the trained model untouched
    assert list(ours) == randomisation_order(model)
    metric = quantus.MPRT(
        similarity_func=quantus.similarity_func.correlation_spearman,
        abs=False,
        normalise=False,
        seed=42,  # Quantus seeds each layer with seed + 1
        disable_warnings=True,
        display_progressbar=False,
    )
    theirs = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=y.numpy(),
        a_batch=maps.numpy()[:, None],
        explain_func=_quantus_explain,
        device="cpu",
    )
    for layer, values in ours.items():
        assert values["spearman"].numpy() == pytest.approx(np.asarray(theirs[layer]), abs=TOL), layer


def test_mprt_checkpoints_and_substituted_parameters():
    model, x = _squeezenet(), _images()
    y = model(x).argmax(1)
    names = randomisation_order(model)
    versions = [p._version for p in model.parameters()]
    out = model_randomisation(_saliency, model, x, y, _saliency(model, x, y), steps=3)
    assert list(out) == [names[0], names[len(names) // 2], names[-1]]
    with randomised(model, names) as random_model:
        changed = random_model(x)
    assert not torch.allclose(changed, model(x))  # the substituted model differs, the model itself does not
    assert [p._version for p in model.parameters()] == versions  # never written in place


def test_random_logit_equals_quantus_with_the_same_classes():
    model, x = MODELS["vgg11_bn"](), _images(3)
    y = model(x).argmax(1)
    maps = _saliency(model, x, y)
    seed = 7
    # Quantus's draw: np.random.seed(seed), then an index among the classes that are not y.
    np.random.seed(seed)
    off_index = np.random.randint(0, 2, len(y))
    others = torch.tensor([[c for c in range(3) if c != t][i] for t, i in zip(y.tolist(), off_index, strict=True)])
    ours = random_logit(_saliency, model, x, y, maps, 3, others=others)
    metric = quantus.RandomLogit(num_classes=3, seed=seed, abs=False, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy()[:, None],
                    explain_func=_quantus_explain, device="cpu")  # fmt: skip
    flat = ssim(maps.flatten(1)[:, None], _saliency(model, x, others).flatten(1)[:, None])
    assert flat.numpy() == pytest.approx(np.asarray(theirs), abs=TOL)  # Quantus: SSIM of the flattened maps
    assert ours["ssim"].shape == (3,) and torch.isfinite(ours["spearman"]).all()
    drawn = random_logit(_saliency, model, x, y, maps, 3, seed=0)
    assert torch.isfinite(drawn["ssim"]).all()


# --------------------------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", list(MODELS))
def test_max_and_avg_sensitivity_equal_quantus_with_the_same_noise(name):
    model, x = MODELS[name](), _images()
    y = model(x).argmax(1)
    maps = _saliency(model, x, y)
    samples, radius = 3, 0.05
    np.random.seed(5)
    noise = np.stack([np.random.uniform(-radius, radius, size=(2, x[0].numel())) for _ in range(samples)])
    ours = sensitivity(_saliency, model, x, y, maps, noise=torch.as_tensor(noise).float().view(samples, *x.shape))
    common = {"nr_samples": samples, "lower_bound": radius, "disable_warnings": True, "display_progressbar": False}
    for key, cls in (("max_sensitivity", quantus.MaxSensitivity), ("avg_sensitivity", quantus.AvgSensitivity)):
        np.random.seed(5)
        theirs = cls(**common)(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy()[:, None],
                               explain_func=_quantus_explain, device="cpu")  # fmt: skip
        assert ours[key].numpy() == pytest.approx(np.asarray(theirs), rel=1e-4), key


def test_sensitivity_is_zero_for_a_map_that_ignores_noise_and_nan_for_a_zero_map():
    model, x = _squeezenet(), _images()
    y = torch.zeros(2, dtype=torch.long)
    fixed = torch.rand(2, 32, 32)
    out = sensitivity(lambda m, xs, cs: fixed.repeat(len(xs) // 2, 1, 1), model, x, y, fixed, samples=3)
    assert out["max_sensitivity"].tolist() == [0.0, 0.0] and out["avg_sensitivity"].tolist() == [0.0, 0.0]
    zero = torch.zeros(2, 32, 32)
    out = sensitivity(lambda m, xs, cs: torch.rand(len(xs), 32, 32), model, x, y, zero, samples=2)
    assert out["max_sensitivity"].isnan().all()
    rng = torch.get_rng_state()
    sensitivity(_saliency, model, x, y, _saliency(model, x, y), samples=2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # a private generator


# --------------------------------------------------------------------------------------------- complexity


def test_sparseness_and_complexity_equal_quantus():
    maps = torch.rand(4, 12, 12) ** 4
    x = torch.rand(4, 1, 12, 12).numpy()
    kwargs = {"disable_warnings": True, "display_progressbar": False, "normalise": False}
    gini = quantus.Sparseness(**kwargs)(model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=maps.numpy()[:, None])
    entropy = quantus.Complexity(**kwargs)(
        model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=maps.numpy()[:, None]
    )
    assert sparseness(maps).numpy() == pytest.approx(np.asarray(gini), abs=TOL)
    assert complexity(maps).numpy() == pytest.approx(np.asarray(entropy), abs=TOL)


def test_sparseness_and_complexity_by_hand():
    maps = torch.zeros(4, 4, 4)
    maps[0, 1, 2] = 3.0  # one pixel
    maps[1] = 1.0  # uniform
    maps[2, 0, :2] = 1.0  # two of 16
    maps[3] = 0.0  # all zero: undefined
    gini, entropy = sparseness(maps), complexity(maps)
    assert gini[:3].tolist() == pytest.approx([15 / 16, 0.0, 7 / 8])
    assert entropy[:3].tolist() == pytest.approx([0.0, math.log(16), math.log(2)])
    assert math.isnan(gini[3].item()) and math.isnan(entropy[3].item())
    assert math.isnan(sparseness(torch.full((1, 4, 4), float("nan"))).item())


# --------------------------------------------------------------------------------------------- faithfulness


def test_faithfulness_correlation_equals_quantus_on_one_channel_images():
    # With one channel Quantus's subsets of input values are subsets of pixels: the definitions are the same.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    maps = _saliency(model, x, y)
    runs, k = 10, 6
    np.random.seed(11)
    subsets = np.stack([np.stack([np.random.choice(64, k, replace=False) for _ in range(3)]) for _ in range(runs)])
    ours = faithfulness_correlation(model, x, maps, y, subsets=torch.as_tensor(subsets), baseline=0.0)
    np.random.seed(11)
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=k, perturb_baseline=0.0, abs=False, normalise=False, return_aggregate=False,
        disable_warnings=True, display_progressbar=False,
    )  # fmt: skip
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy()[:, None], device="cpu")
    assert ours.numpy() == pytest.approx(np.asarray(theirs), abs=TOL)


def test_faithfulness_correlation_of_a_linear_model_with_its_exact_attribution_is_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    x = torch.rand(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    w = model[1].weight.detach().view(2, 3, 8, 8)[y]
    maps = (w * x).sum(1)  # the exact drop of each pixel replaced by 0 (signed)
    assert faithfulness_correlation(model, x, maps, y, baseline=0.0, runs=16).tolist() == pytest.approx([1.0, 1.0])
    assert faithfulness_correlation(model, x, torch.ones(2, 8, 8), y, runs=8, subset=5).isnan().all()  # constant sums
    with pytest.raises(ValueError, match="subset must select"):
        faithfulness_correlation(model, x, maps, y, subset=64)
