"""LRP (functional/lrp.py) against zennit 0.5 on torchvision VGG-11-BN and ResNet-18 for every composite, and the
contract: nothing left hooked or changed, unsupported layers named. zennit is a test-only oracle."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import require_module
from torch import nn

from lightning_explain.functional import explain
from lightning_explain.functional.lrp import COMPOSITES, lrp, lrp_rules

require_module("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.rules import Epsilon  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402


def _vgg() -> nn.Module:
    model = torchvision.models.vgg11_bn(num_classes=3)
    model.avgpool = nn.AdaptiveAvgPool2d(2)  # the stock head has 100M weights: a small one, same layer types
    model.classifier = nn.Sequential(nn.Linear(512 * 4, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 3))
    return model


def _resnet() -> nn.Module:
    return torchvision.models.resnet18(num_classes=3)


#: Each architecture, its zennit canonizer (BatchNorm merging; ResNet's additions as zennit Sum modules), image side.
ARCHES = {"vgg11_bn": (_vgg, VGGCanonizer, 32), "resnet18": (_resnet, ResNetCanonizer, 16)}


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = ARCHES[arch][0]().double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that are not the identity, so the merge matters
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            # zennit's merge leaves the BatchNorm's eps in place (its "identity" scales by 1/sqrt(1 + eps), ~1e-4
            # relative over ResNet-18); with eps = 0 both merges are exact.
            m.eps = 0.0
    return model


def _zennit_composite(name: str, canonizer: type) -> object:
    if name == "epsilon":
        rules = [(nn.Conv2d, Epsilon(1e-6)), (nn.Linear, Epsilon(1e-6))]
        return LayerMapComposite(layer_map=layer_map_base() + rules, canonizers=[canonizer()])
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=[canonizer()])
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=0.0, high=1.0, canonizers=[canonizer()])
    return EpsilonAlpha2Beta1(canonizers=[canonizer()])


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("composite", COMPOSITES)
def test_relevance_equals_zennit(arch, composite):
    model = _model(arch)
    size = ARCHES[arch][2]
    x = torch.rand(2, 3, size, size, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2])
    with Gradient(model=model, composite=_zennit_composite(composite, ARCHES[arch][1])) as attributor:
        _, expected = attributor(x, torch.eye(3, dtype=torch.double)[targets])
    bounds = {"low": 0.0, "high": 1.0} if composite == "epsilon_gamma_box" else {}
    ours = lrp(model, x, targets, composite=composite, **bounds).double()
    assert (ours - expected).abs().max() <= 1e-6 * expected.abs().max()  # float32 output of a float64 pass


def _hook_counts(model: nn.Module) -> list[tuple[int, int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def test_pass_leaves_model_hooks_and_grads_as_they_were():
    model = _model("resnet18").float()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_counts(model)
    out = explain(model, torch.rand(2, 3, 16, 16), None, ["lrp_epsilon_plus_flat", "lrp_alpha_beta"])
    assert out["lrp_epsilon_plus_flat"].shape == (2, 16, 16) and float(out["lrp_alpha_beta"].max()) == 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
    ] == hooks
    assert all(p.grad is None for p in model.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    assert torch.equal(torch.autograd.grad((x + x).sum(), x)[0], torch.full_like(x, 2.0))  # additions are plain again


def test_unsupported_layer_is_named():
    model = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    with pytest.raises(ValueError, match=r"'features.0.2' \(Hardswish\)"):
        explain(model, torch.rand(1, 3, 32, 32), None, ["lrp_epsilon"])
    assert all(not m._forward_hooks for m in model.modules())  # removed also after the error
    lonely = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2)).eval()
    lonely(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"BatchNorm '0'.*follow a Conv2d or Linear"):
        lrp(lonely, torch.rand(1, 3, 8, 8), 0)


def test_conservation_and_options_by_hand():
    # One linear layer, no bias, epsilon rule, output relevance 1 (the one-hot gradient of the score):
    # R_i = x_i w_i / z with z = sum_i x_i w_i = 8, so the relevance sums to 1.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, 0.0, 0.0]]))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.double)
    r = lrp(model, x, 0, composite="epsilon", epsilon=0.0)
    assert r.flatten().tolist() == pytest.approx([1 / 8, -4 / 8, 9 / 8, 2 / 8])
    assert lrp_rules("epsilon_gamma_box") == {"conv": "gamma", "linear": "epsilon", "first": "zbox"}
    with pytest.raises(ValueError, match="composite must be one of"):
        lrp(model, x, 0, composite="nope")
    with pytest.raises(ValueError, match=r"unknown options \['gamma'\]"):
        lrp(model, x, 0, composite="epsilon", gamma=0.5)
