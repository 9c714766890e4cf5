"""Every method against a peer's implementation of the same name (pytorch-grad-cam, captum: test-only oracles)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import TinyCNN, loaders, read_event_images, require_module, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_explain import ExplainCallback
from lightning_explain.functional import (
    eigen_cam,
    explain,
    gradient_x_input,
    integrated_gradients,
    occlusion,
    score_cam,
    smooth_grad,
)
from lightning_explain.functional.perturbation import score_cam_map
from lightning_explain.functional.targets import TargetSpec

captum_attr = require_module("captum.attr")
pgc = require_module("pytorch_grad_cam")
pgc_targets = require_module("pytorch_grad_cam.utils.model_targets")

PGC_CAMS = {
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
}


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(1)
    return TinyCNN().eval()


def _pgc(name: str, model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor | None, **attrs):
    module = dict(model.named_modules())[layer]
    with getattr(pgc, name)(model=model, target_layers=[module]) as cam:
        for key, value in attrs.items():
            setattr(cam, key, value)
        targets = None if classes is None else [pgc_targets.ClassifierOutputTarget(int(c)) for c in classes]
        return torch.from_numpy(cam(x, targets=targets))


# features.4 (the in-place ReLU module) for the hand-built CNN: pytorch-grad-cam records features.3's output
# before the in-place ReLU overwrites it (see test_functional.py).
CASES = [("resnet", "layer4", 64), ("resnet", "layer3", 64), ("cnn", "features.4", 32)]


@pytest.mark.parametrize("method", sorted(PGC_CAMS))
@pytest.mark.parametrize(("model_name", "layer", "size"), CASES)
def test_cam_variants_match_pytorch_grad_cam(request, method, model_name, layer, size):
    model = request.getfixturevalue(model_name)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([0, 2, 1])
    ours = explain(model, x, layer, (method,), classes)[method]
    ref = _pgc(PGC_CAMS[method], model, layer, x, classes)
    assert ours.amax() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=2e-3)


class _NegatedEigenCAM(pgc.EigenCAM):
    """pytorch-grad-cam's EigenCAM with the other sign of the principal direction (the SVD's choice is arbitrary)."""

    def get_cam_image(self, *args, **kwargs):
        return -super().get_cam_image(*args, **kwargs)


@pytest.mark.parametrize(("model_name", "layer", "size"), CASES)
def test_eigen_cam_matches_pytorch_grad_cam_up_to_sign_for_every_image(request, model_name, layer, size):
    # A principal direction's sign is arbitrary: pytorch-grad-cam keeps whatever the SVD returns, we pick the
    # sign that correlates with the mean activation. Each image's map must equal the oracle's map of one sign.
    model = request.getfixturevalue(model_name)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    ours = eigen_cam(model, x, layer)
    module = dict(model.named_modules())[layer]
    oracles = []
    for cam_class in (pgc.EigenCAM, _NegatedEigenCAM):
        with cam_class(model=model, target_layers=[module]) as cam:
            oracles.append(torch.from_numpy(cam(x, targets=None)))
    plus, minus = oracles
    for i in range(4):
        assert not torch.allclose(plus[i], minus[i], atol=0.05), f"image {i}: both signs give the same map"
        matches = [torch.allclose(ours[i], ref, atol=2e-3) for ref in (plus[i], minus[i])]
        assert any(matches), f"image {i} matches pytorch-grad-cam's EigenCAM of neither sign"
    assert ours.amax() > 0


@pytest.mark.parametrize(("model_name", "layer", "size"), [("resnet", "layer3", 64), ("cnn", "features.4", 32)])
def test_score_cam_matches_pytorch_grad_cam(request, model_name, layer, size):
    model = request.getfixturevalue(model_name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    classes = torch.tensor([1, 0])
    ref = _pgc("ScoreCAM", model, layer, x, classes, batch_size=128)
    ours = score_cam(model, x, layer, classes, batch_size=96)
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=2e-3)


def test_score_cam_shares_the_forward_of_constant_channels_without_changing_the_result(cnn):
    x = torch.rand(2, 3, 32, 32)
    acts = torch.rand(2, 6, 4, 4)
    acts[:, [1, 4]] = 0.0  # dead channels
    acts[0, 2] = 3.0  # a constant, non-zero channel
    spec = TargetSpec(torch.tensor([2, 1]))
    calls = []
    handle = cnn.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        ours = score_cam_map(cnn, x, acts, spec, batch_size=2)
    finally:
        handle.remove()
    # Naive reference: one forward per channel, constant channels included.
    up = nn.functional.interpolate(acts, size=(32, 32), mode="bilinear", align_corners=True)
    low, high = up.flatten(2).amin(2)[..., None, None], up.flatten(2).amax(2)[..., None, None]
    masks = (up - low) / (high - low + 1e-8)
    with torch.no_grad():
        scores = torch.stack([cnn(x[b : b + 1] * masks[b, :, None])[:, spec.classes[b]] for b in range(2)])
    expected = torch.relu(torch.einsum("bk,bkhw->bhw", torch.softmax(scores, 1), acts))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    constant = (high - low).flatten(1) <= 0  # exactly constant after upsampling (3.0 need not stay exact)
    assert constant.sum() >= 4
    expected_rows = sum(int((~constant[b]).sum()) + int(constant[b].any()) for b in range(2))
    assert sum(calls) == expected_rows  # live channels + one shared zero-mask forward per image


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_integrated_gradients_match_captum_and_are_complete(resnet, method):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    classes = torch.tensor([3, 7])
    attr, delta = integrated_gradients(
        resnet, x, classes, steps=24, method=method, internal_batch_size=7, return_convergence_delta=True
    )
    ig = captum_attr.IntegratedGradients(resnet)
    ref, ref_delta = ig.attribute(x, target=classes, n_steps=24, method=method, return_convergence_delta=True)
    if method == "riemann_trapezoid":
        # captum's trapezoid weights are 1/n (halved at the ends) and sum to (n-1)/n, not 1; ours are the
        # trapezoid rule's 1/(n-1). The attributions therefore differ by exactly that factor.
        torch.testing.assert_close(attr, ref.detach() * 24 / 23, rtol=1e-3, atol=1e-6)
        ours_total = attr.flatten(1).sum(1) - delta  # = S(x) - S(x0), the same for both
        torch.testing.assert_close(ours_total, ref.detach().flatten(1).sum(1) - ref_delta.float(), rtol=1e-3, atol=1e-4)
        return
    torch.testing.assert_close(attr, ref.detach(), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(delta, ref_delta.float(), rtol=1e-2, atol=1e-4)
    # Completeness: the error shrinks with more steps.
    _, fine = integrated_gradients(resnet, x, classes, steps=96, method=method, return_convergence_delta=True)
    assert fine.abs().max() <= delta.abs().max() + 1e-6


def test_smooth_grad_matches_captum_noise_tunnel_with_the_same_noise(cnn):
    x = torch.rand(2, 3, 16, 16)
    classes = torch.tensor([1, 2])
    samples, stdev = 5, 0.2
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(cnn))
    torch.manual_seed(11)
    ref = nt.attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, target=classes)
    torch.manual_seed(11)  # captum's draw: one normal tensor for the repeat_interleaved batch
    drawn = torch.normal(0, torch.tensor(stdev).repeat((2 * samples, 3, 16, 16)))
    noise = drawn.view(2, samples, 3, 16, 16).transpose(0, 1)
    ours = smooth_grad(cnn, x, classes, noise=noise, normalize=False, internal_batch_size=3)
    torch.testing.assert_close(ours, ref.detach().amax(1), rtol=1e-4, atol=1e-7)


def test_smooth_grad_leaves_the_global_rng_alone(cnn):
    state = torch.get_rng_state()
    a = smooth_grad(cnn, torch.rand(1, 3, 16, 16, generator=torch.Generator()), samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    b = smooth_grad(cnn, torch.rand(1, 3, 16, 16, generator=torch.Generator()), samples=4)
    torch.testing.assert_close(a, b)  # the default generator is seeded: same noise, same map


@pytest.mark.parametrize(("window", "stride"), [((8, 8), (4, 4)), ((5, 7), (3, 4))])
def test_occlusion_matches_captum(cnn, window, stride):
    x = torch.rand(2, 3, 20, 20)
    classes = torch.tensor([0, 2])
    ours = occlusion(cnn, x, classes, window=window, stride=stride, batch_size=7)
    ref = captum_attr.Occlusion(cnn).attribute(
        x, sliding_window_shapes=(3, *window), strides=(3, *stride), baselines=0, target=classes
    )
    torch.testing.assert_close(ours, ref[:, 0].float(), rtol=1e-4, atol=1e-6)


def test_gradient_x_input_matches_captum(resnet):
    x = torch.rand(2, 3, 32, 32)
    ref = captum_attr.InputXGradient(resnet).attribute(x.clone().requires_grad_(), target=torch.tensor([1, 4]))
    torch.testing.assert_close(gradient_x_input(resnet, x, torch.tensor([1, 4])), ref.detach(), rtol=1e-4, atol=1e-7)


def test_explain_maps_of_every_method_are_normalised(cnn):
    methods = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "saliency")
    methods += ("gradxinput", "smoothgrad", "integrated_gradients", "occlusion", "activations")
    out = explain(
        cnn,
        torch.rand(2, 3, 16, 16),
        "features.3",
        methods,
        options={"smoothgrad": {"samples": 3}, "integrated_gradients": {"steps": 4}, "occlusion": {"window": 4}},
    )
    for name in ("gradcampp", "scorecam", "smoothgrad", "integrated_gradients", "occlusion", "gradxinput"):
        assert out[name].shape == (2, 16, 16) and out[name].amin() >= 0 and out[name].amax() <= 1, name


def test_bad_options_are_clear_errors(cnn):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"unknown options \['sample'\] for 'smoothgrad'"):
        explain(cnn, x, "features.3", ("smoothgrad",), options={"smoothgrad": {"sample": 3}})
    with pytest.raises(ValueError, match="options are for"):
        explain(cnn, x, "features.3", ("gradcam",), options={"gradcam": {"x": 1}})
    with pytest.raises(ValueError, match="method must be one of"):
        integrated_gradients(cnn, x, method="simpson")
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\]"):
        smooth_grad(cnn, x, 3)


def test_internal_batch_sizes_do_not_change_results(cnn):
    x = torch.rand(3, 3, 16, 16)
    a = integrated_gradients(cnn, x, steps=6, internal_batch_size=1)
    b = integrated_gradients(cnn, x, steps=6, internal_batch_size=100)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(occlusion(cnn, x, batch_size=1), occlusion(cnn, x, batch_size=500))
    torch.testing.assert_close(smooth_grad(cnn, x, internal_batch_size=1), smooth_grad(cnn, x, internal_batch_size=99))


class _FlatMLP(nn.Module):
    """A model that ``.view``s its input, which a channels_last tensor cannot take."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8 + 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x).mean(dim=(2, 3))
        return self.fc(torch.cat([x.view(x.shape[0], -1), pooled], dim=1))


def test_perturbation_passes_fall_back_to_contiguous_inputs_for_models_that_view_them():
    torch.manual_seed(3)
    model = _FlatMLP().eval()
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(RuntimeError):
        model(x.contiguous(memory_format=torch.channels_last))
    classes = torch.tensor([1, 3])
    ours = occlusion(model, x, classes, window=(3, 3), stride=(2, 2))
    ref = captum_attr.Occlusion(model).attribute(x, target=classes, sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2))
    torch.testing.assert_close(ours, ref[:, 0].float(), rtol=1e-4, atol=1e-6)
    assert score_cam(model, x, "conv", classes).shape == (2, 8, 8)


def test_bf16_precision_is_opt_in_and_close_to_fp32(resnet):
    x = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([2, 7])
    exact = score_cam(resnet, x, "layer4", classes, batch_size=128)
    fast = score_cam(resnet, x, "layer4", classes, batch_size=128, precision="bf16")
    assert not torch.equal(exact, fast)  # it really ran in bf16
    torch.testing.assert_close(fast, exact, rtol=0, atol=5e-3)
    drop = occlusion(resnet, x, classes, window=(16, 16), stride=(16, 16))
    drop_bf16 = occlusion(resnet, x, classes, window=(16, 16), stride=(16, 16), precision="bf16")
    assert torch.corrcoef(torch.stack([drop.flatten(), drop_bf16.flatten()]))[0, 1] > 0.98
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\); got 'fp16'"):
        score_cam(resnet, x, "layer4", classes, precision="fp16")  # type: ignore[arg-type]
    out = explain(resnet, x, "layer4", ("scorecam",), targets=classes, options={"scorecam": {"precision": "bf16"}})
    torch.testing.assert_close(out["scorecam"], fast)


def test_callback_runs_expensive_methods_on_their_own_schedule_and_subset(tmp_path):
    cb = ExplainCallback(
        "features.3",
        methods=("gradcam", "scorecam", "smoothgrad"),
        num_probe=5,
        method_options={"scorecam": {"every_n_epochs": 2}, "smoothgrad": {"max_images": 2, "samples": 3}},
        strict=True,
    )
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[cb], max_epochs=3)
    t.fit(TinyCNN(), *loaders())
    images = read_event_images(t.logger.log_dir)
    assert [s for s, _ in images["explain/gradcam"]] == [2, 5, 8]
    assert [s for s, _ in images["explain/scorecam"]] == [2, 8]  # epochs 0 and 2
    assert [s for s, _ in images["explain/smoothgrad"]] == [2, 5, 8]
    heights = {tag: images[tag][0][1].shape[0] for tag in images}
    assert heights["explain/scorecam"] < heights["explain/gradcam"]  # 4 images by default, not 5
    assert heights["explain/smoothgrad"] < heights["explain/scorecam"]  # max_images=2
    assert "explain/smoothgrad/focus/border_lift" in t.callback_metrics


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"occlusion": {"window": 4}}, "not in methods"),
        ({"gradcam": {"samples": 3}}, r"unknown keys \['samples'\]"),
        ({"gradcam": {"every_n_epochs": 0}}, "must be an integer >= 1"),
    ],
)
def test_callback_method_options_are_checked(options, match):
    with pytest.raises(ValueError, match=match):
        ExplainCallback(methods=("gradcam",), method_options=options)
