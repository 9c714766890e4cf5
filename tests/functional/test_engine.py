"""The functional core against captum and pytorch-grad-cam (test-only oracles) and hand-computed values."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import TinyCNN, assert_maps_agree, require_module
from torch import nn

from lightning_explain.functional import (
    channel_activations,
    explain,
    grad_cam,
    normalize_maps,
    saliency,
    upsample_maps,
)

captum_attr = require_module("captum.attr")
pgc = require_module("pytorch_grad_cam")
pgc_targets = require_module("pytorch_grad_cam.utils.model_targets")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(1)
    return TinyCNN().eval()


@pytest.mark.parametrize(
    ("model_name", "layer"), [("resnet", "layer4"), ("resnet", "layer3.1.conv2"), ("cnn", "features.3")]
)
def test_grad_cam_raw_matches_captum_layer_grad_cam(request, model_name, layer):
    model = request.getfixturevalue(model_name)
    x = torch.rand(4, 3, 64, 64)
    module = dict(model.named_modules())[layer]
    target = model(x).argmax(1)
    ours = grad_cam(model, x, layer, upsample=False, normalize=False)
    ref = captum_attr.LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)[:, 0]
    assert ours.shape == ref.shape
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-4, atol=1e-6)


# For the hand-built CNN, the in-place ReLU module (features.4) rather than the conv before it:
# pytorch-grad-cam records features.3's output, which the in-place ReLU then overwrites (captum and we
# keep the pre-ReLU activations: see test_inplace_relu_after_target_layer_gives_pre_relu_activations).
@pytest.mark.parametrize(("model_name", "layer"), [("resnet", "layer4"), ("cnn", "features.4")])
def test_grad_cam_matches_pytorch_grad_cam_per_sample_targets(request, model_name, layer):
    model = request.getfixturevalue(model_name)
    x = torch.rand(5, 3, 64, 64)
    classes = torch.tensor([0, 1, 2, 1, 0])
    module = dict(model.named_modules())[layer]
    with pgc.GradCAM(model=model, target_layers=[module]) as cam:
        ref = torch.from_numpy(cam(x, targets=[pgc_targets.ClassifierOutputTarget(int(c)) for c in classes]))
    # Both: ReLU'd map, bilinear resize to the input (half-pixel centres), min-max to [0, 1] per image.
    ours = grad_cam(model, x, layer, classes)
    assert ours.shape == (5, 64, 64)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    raw = grad_cam(model, x, layer, classes, upsample=False, normalize=False)
    torch.testing.assert_close(ours, normalize_maps(upsample_maps(raw, (64, 64))))


@pytest.mark.parametrize("model_name", ["resnet", "cnn"])
def test_saliency_matches_captum(request, model_name):
    model = request.getfixturevalue(model_name)
    x = torch.rand(3, 3, 32, 32)
    target = model(x).argmax(1)
    ours = saliency(model, x, normalize=False)
    ref = captum_attr.Saliency(model).attribute(x.clone(), target=target, abs=True).amax(1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)
    norm = saliency(model, x)
    assert norm.amin().item() == 0.0 and torch.allclose(norm.flatten(1).amax(1), torch.ones(3))


def test_explain_is_one_forward_and_agrees_with_single_method_calls(resnet):
    x = torch.rand(2, 3, 64, 64)
    calls = []
    handle = resnet.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = explain(resnet, x, "layer4")
    finally:
        handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(out["gradcam"], grad_cam(resnet, x, "layer4"))
    torch.testing.assert_close(out["saliency"], saliency(resnet, x))
    maps, channels = channel_activations(resnet, x, "layer4", top_k=3)
    torch.testing.assert_close(out["activations"], maps)
    assert torch.equal(out.activation_channels, channels)
    assert torch.equal(out.targets, resnet(x).argmax(1))


def test_explain_calls_autograd_grad_once(resnet, monkeypatch):
    real = torch.autograd.grad
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    explain(resnet, torch.rand(2, 3, 32, 32), "layer4")
    assert len(calls) == 1


def test_channel_activations_are_the_top_k_by_mean_activation(resnet):
    x = torch.rand(2, 3, 64, 64)
    feats = {}
    h = resnet.layer3.register_forward_hook(lambda m, a, o: feats.setdefault("a", o.detach()))
    with torch.no_grad():
        resnet(x)
    h.remove()
    expected = feats["a"].mean((2, 3)).topk(4, dim=1).indices
    maps, channels = channel_activations(resnet, x, "layer3", top_k=4, upsample=False, normalize=False)
    assert torch.equal(channels, expected)
    torch.testing.assert_close(maps, feats["a"].gather(1, expected[:, :, None, None].expand(-1, -1, 4, 4)))


def test_hand_weighted_model_gives_exact_grad_cam_and_saliency():
    # features: a 1x1 conv with weights [1, -1] on a one-channel image -> channels (x, -x);
    # head: global average pool then logits = [a0 + 2 a1, -a0]. For class 0, dS/dA_k = w_k / (h*w).
    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[[[1.0]]], [[[-1.0]]]])
    linear = nn.Linear(2, 2, bias=False)
    linear.weight.data = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()
    x = torch.arange(4.0).view(1, 1, 2, 2)
    cam = grad_cam(model, x, "0", 0, upsample=False, normalize=False)
    # weights = (1/4, 2/4); map = ReLU(1/4 * x + 2/4 * (-x)) = ReLU(-x/4) = 0 everywhere.
    torch.testing.assert_close(cam, torch.zeros(1, 2, 2))
    cam1 = grad_cam(model, x, "0", 1, upsample=False, normalize=False)
    # class 1: weights (-1/4, 0) -> ReLU(-x/4) = 0 as well; with a negative input the map is -x/4 > 0.
    cam_neg = grad_cam(model, -x, "0", 0, upsample=False, normalize=False)
    torch.testing.assert_close(cam_neg, (x / 4).view(1, 2, 2))
    torch.testing.assert_close(cam1, torch.zeros(1, 2, 2))
    # d(a0 + 2 a1)/dx = (1 - 2) / 4 at every pixel -> |.| = 1/4.
    torch.testing.assert_close(saliency(model, x, 0, normalize=False), torch.full((1, 2, 2), 0.25))


def test_constant_maps_do_not_divide_by_zero():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = normalize_maps(maps)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(4, 4)) and torch.equal(out[1], torch.zeros(4, 4))
    assert out[2].min() == 0 and out[2].max() == 1


def test_nan_in_a_map_stays_visible_for_the_caller():
    maps = torch.zeros(2, 3, 3)
    maps[1, 0, 0] = float("nan")
    out = normalize_maps(maps)
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).any()


@pytest.mark.parametrize(
    "targets",
    [None, 2, torch.tensor([0, 1, 2]), lambda logits: logits[:, 1] - logits[:, 0]],
    ids=["predicted", "int", "per-sample", "callable"],
)
def test_target_forms_pick_the_right_scores(resnet, targets):
    x = torch.rand(3, 3, 32, 32)
    logits = resnet(x).detach()
    out = explain(resnet, x, "layer4", ("saliency",), targets, normalize=False)
    x_req = x.clone().requires_grad_(True)
    y = resnet(x_req)
    if targets is None:
        score = y.gather(1, logits.argmax(1)[:, None]).sum()
    elif isinstance(targets, int):
        score = y[:, targets].sum()
    elif isinstance(targets, torch.Tensor):
        score = y.gather(1, targets[:, None]).sum()
    else:
        score = targets(y).sum()
    (grad,) = torch.autograd.grad(score, x_req)
    torch.testing.assert_close(out["saliency"], grad.abs().amax(1))


def test_model_is_left_untouched():
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    resnet.fc.weight.grad = torch.ones_like(resnet.fc.weight)
    before_hooks = {n: dict(m._forward_hooks) for n, m in resnet.named_modules()}
    explain(resnet, torch.rand(2, 3, 32, 32), "layer4")
    assert torch.equal(resnet.fc.weight.grad, torch.ones_like(resnet.fc.weight))
    assert all(p.grad is None for n, p in resnet.named_parameters() if n != "fc.weight")
    assert {n: dict(m._forward_hooks) for n, m in resnet.named_modules()} == before_hooks


def test_inplace_relu_after_target_layer_gives_pre_relu_activations():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    pre = model[0](x).detach()
    maps, channels = channel_activations(model, x, "0", top_k=4, upsample=False, normalize=False)
    assert (maps < 0).any(), "the in-place ReLU must not overwrite the recorded activations"
    torch.testing.assert_close(maps, pre.gather(1, channels[:, :, None, None].expand(-1, -1, 8, 8)))
    ref = captum_attr.LayerGradCam(model, model[0]).attribute(x, target=model(x).argmax(1), relu_attributions=True)
    torch.testing.assert_close(grad_cam(model, x, "0", upsample=False, normalize=False), ref[:, 0].detach())


def test_frozen_backbone_still_gets_maps(resnet):
    frozen = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    frozen.load_state_dict(resnet.state_dict())
    for p in frozen.parameters():
        p.requires_grad_(False)
    x = torch.rand(2, 3, 64, 64)
    out = explain(frozen, x, "layer4")
    torch.testing.assert_close(out["gradcam"], explain(resnet, x, "layer4")["gradcam"])
    assert all(not p.requires_grad for p in frozen.parameters())


def test_runs_under_inference_mode(resnet):
    x = torch.rand(2, 3, 32, 32)
    expected = explain(resnet, x, "layer4")["gradcam"]
    with torch.inference_mode():
        inf_x = torch.rand(2, 3, 32, 32)
        inf_x.copy_(x)
        out = explain(resnet, inf_x, "layer4")
    torch.testing.assert_close(out["gradcam"], expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_gives_fp32_maps_close_to_the_fp32_model(dtype):
    model = TinyCNN().eval()
    x = torch.rand(4, 3, 16, 16)
    half, half_x = copy.deepcopy(model).to(dtype), x.to(dtype)
    cams = grad_cam(half, half_x, "features.3")
    assert cams.dtype == torch.float32
    assert_maps_agree(cams, grad_cam(model, x, "features.3"), min_correlation=0.99, max_difference=0.1)
    maps, channels = channel_activations(half, half_x, "features.3")
    reference, reference_channels = channel_activations(model, x, "features.3")
    assert torch.equal(channels, reference_channels)
    assert_maps_agree(maps.flatten(0, 1), reference.flatten(0, 1), min_correlation=0.99, max_difference=0.05)
    assert_maps_agree(saliency(half, half_x), saliency(model, x), min_correlation=0.95, max_difference=0.35)


def test_layer_given_as_module_and_default_last_block(resnet):
    """The default is the last block's output (after the residual add) with a grid above 1 x 1, found by running
    the model: layer4's on 64 px inputs (2 x 2), layer3's on 32 px inputs (layer4 is 1 x 1 there)."""
    small = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(grad_cam(resnet, small, None), grad_cam(resnet, small, "layer3.1"))
    x = torch.rand(1, 3, 64, 64)
    by_module = grad_cam(resnet, x, resnet.layer4[1])
    by_default = grad_cam(resnet, x, None)
    torch.testing.assert_close(by_module, by_default)
    assert not torch.allclose(by_default, grad_cam(resnet, x, resnet.layer4[1].conv2))


def test_unknown_layer_names_close_matches(resnet):
    with pytest.raises(ValueError, match=r"'layer5' does not exist.*'layer4'"):
        grad_cam(resnet, torch.rand(1, 3, 32, 32), "layer5")


def test_non_4d_layer_is_a_clear_error(resnet):
    with pytest.raises(ValueError, match=r"'fc' outputs \[1, 10\].*4-D"):
        grad_cam(resnet, torch.rand(1, 3, 32, 32), "fc")


def test_integer_images_are_a_clear_error(resnet):
    with pytest.raises(TypeError, match="floating-point images"):
        saliency(resnet, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_non_logit_output_names_output_transform():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            f = self.conv(x).mean((2, 3))
            return {self.key: self.fc(f), "features": f}

    model = TwoHeads().eval()
    x = torch.rand(2, 3, 8, 8)
    model.key = "scores"  # no key that obviously holds the logits
    with pytest.raises(ValueError, match=r"keys \['features', 'scores'\].*output_transform=lambda out: out\["):
        saliency(model, x)
    out = saliency(model, x, output_transform=lambda o: o["scores"])
    assert out.shape == (2, 8, 8)
    model.key = "logits"  # a dict with "logits" (or "out") needs no output_transform
    torch.testing.assert_close(saliency(model, x), out)


def test_bad_targets_are_clear_errors(resnet):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"lie in \[0, 9\]"):
        saliency(resnet, x, 10)
    with pytest.raises(ValueError, match="one per sample"):
        saliency(resnet, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="methods must be"):
        explain(resnet, x, "layer4", ("gradcam", "kernel_shap"))


def test_class_indices_made_under_inference_mode_can_be_explained():
    """``trainer.validate()`` runs under inference mode: targets made there must still work."""
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    with torch.inference_mode():
        classes, x = torch.tensor([1, 2]), torch.rand(2, 3, 32, 32)
    expected = grad_cam(model, x.clone(), "layer4", torch.tensor([1, 2]))
    torch.testing.assert_close(grad_cam(model, x, "layer4", classes), expected)
