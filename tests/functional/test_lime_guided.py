"""LIME, guided backpropagation, deconvnet and guided Grad-CAM: against captum (test-only oracle), against a model
whose LIME weights are known exactly, and in a real Trainer run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from conftest import TinyCNN, make_dataset, read_event_images, require_module, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_explain import ExplainCallback
from lightning_explain.functional import (
    deconvnet,
    explain,
    guided_backprop,
    guided_grad_cam,
    lime,
    normalize_maps,
    relu_rule,
    superpixels,
)
from lightning_explain.functional.lime import grid_segments
from lightning_explain.functional.progress import reporting

captum_attr = require_module("captum.attr")
captum_linear = require_module("captum._utils.models.linear_model")


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(1)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """torchvision's ResNet with one BasicBlock per stage (resnet18 has two): its shared in-place ReLU module and
    residual adds, at half resnet18's cost."""
    torch.manual_seed(0)
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=5).eval()


# ------------------------------------------------------------------------------------------------------ LIME


class _LinearInSuperpixelMeans(nn.Module):
    """Scores exactly linear in the mean intensity of each superpixel: ``W @ means + b``."""

    def __init__(self, labels: torch.Tensor, classes: int = 3) -> None:
        super().__init__()
        k = int(labels.max()) + 1
        onehot = F.one_hot(labels.flatten(), k).float().T
        self.register_buffer("average", onehot / onehot.sum(dim=1, keepdim=True))
        self.weight = nn.Parameter(torch.randn(classes, k))
        self.bias = nn.Parameter(torch.randn(classes))

    def means(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1).flatten(1) @ self.average.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.means(x) @ self.weight.T + self.bias


def test_lime_recovers_the_weights_of_a_model_linear_in_superpixel_means():
    labels = grid_segments(16, 16, 4)
    model = _LinearInSuperpixelMeans(labels).eval()
    x = torch.rand(2, 3, 16, 16)
    classes = torch.tensor([0, 2])
    # Switching superpixel k off moves its mean from m_k to the baseline c: the score is linear in z with
    # weight W[t, k] * (m_k - c). Least squares (ridge=0) recovers it exactly.
    got = lime(model, x, classes, segments=4, samples=40, ridge=0.0, baseline=0.0, batch_size=7)
    true = (model.weight[classes] * model.means(x)).detach()
    torch.testing.assert_close(got.flatten(1), true[:, labels.flatten()], rtol=1e-4, atol=1e-5)
    got = lime(model, x, classes, segments=4, samples=40, ridge=0.0, batch_size=64)  # baseline: the image mean
    true = (model.weight[classes] * (model.means(x) - x.mean(dim=(1, 2, 3))[:, None])).detach()
    torch.testing.assert_close(got.flatten(1), true[:, labels.flatten()], rtol=1e-4, atol=1e-5)
    shrunk = lime(model, x, classes, segments=4, samples=40, ridge=1.0)  # the default ridge shrinks the weights
    assert torch.corrcoef(torch.stack([shrunk.flatten(), got.flatten()]))[0, 1] > 0.9
    assert shrunk.norm() < got.norm()


def test_lime_correlates_with_captum_lime_on_the_same_superpixels_and_sample_count(cnn):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([1, 2])
    samples, width = 128, 0.25
    ours = lime(cnn, x, classes, segments=4, samples=samples, kernel_width=width)
    mask = grid_segments(32, 32, 4)

    def kernel(original, perturbed, z, **kwargs):  # the paper's pi_x on the binary vector, as ours
        distance = 1 - torch.sqrt(z.float().sum() / z.numel())
        return torch.exp(-(distance**2) / width**2).item()

    for b in range(2):
        ref = captum_attr.Lime(cnn, interpretable_model=captum_linear.SkLearnRidge(alpha=1.0), similarity_func=kernel)
        attr = ref.attribute(
            x[b : b + 1],
            target=int(classes[b]),
            feature_mask=mask[None, None],
            baselines=x[b : b + 1].mean(dim=(2, 3), keepdim=True),
            n_samples=samples,
            perturbations_per_eval=64,
        )[0, 0]
        corr = torch.corrcoef(torch.stack([ours[b].flatten(), attr.flatten().float()]))[0, 1]
        assert corr > 0.97, corr  # different random draws; measured 0.99+ (docs/guides/methods.md)


def test_lime_draws_from_its_own_generator_and_announces_its_loop(cnn):
    x = torch.rand(2, 3, 16, 16)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    seen = []

    class Record:
        def start(self, description, total):
            seen.append((description, total))
            return Bar()

    class Bar:
        def update(self, n):
            pass

        def close(self):
            pass

    with reporting(Record()):
        a = lime(cnn, x, 1, segments=4, samples=20, batch_size=8)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert seen == [("lime", 2 * 3)]  # 2 images x ceil(20 / 8) forwards
    torch.testing.assert_close(lime(cnn, x, 1, segments=4, samples=20, batch_size=3), a)  # same seed, same map
    assert not torch.equal(lime(cnn, x, 1, segments=4, samples=20, seed=1), a)


def test_lime_on_slic_superpixels_gives_one_weight_per_segment(cnn, monkeypatch):
    require_module("skimage.segmentation")
    x = torch.zeros(2, 3, 24, 24)
    x[:, 0, :, :12] = 1.0  # two flat halves: SLIC follows the edge
    x[1, 1, 12:] = 1.0
    labels = superpixels(x, "slic", 8)
    assert labels.shape == (2, 24, 24) and labels.dtype == torch.long
    weights = lime(cnn, x, 0, segmentation="slic", segments=8, samples=24)
    for b in range(2):
        for k in labels[b].unique():
            assert weights[b][labels[b] == k].unique().numel() == 1  # one weight per superpixel
        assert not bool((labels[b][:, :12, None] == labels[b][:, None, 12:]).any())  # no segment crosses the edge
    out = explain(cnn, x, None, ("lime",), options={"lime": {"segmentation": "slic", "segments": 8, "samples": 24}})
    direct = lime(cnn, x, segmentation="slic", segments=8, samples=24)
    torch.testing.assert_close(out["lime"], normalize_maps(torch.relu(direct)))
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)  # as if scikit-image were not installed
    with pytest.raises(ImportError, match=r"pip install 'lightning-explain\[lime\]'"):
        lime(cnn, x, 0, segmentation="slic")


def test_lime_bad_options_are_clear_errors(cnn):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="segmentation must be one of"):
        lime(cnn, x, segmentation="quickshift")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finer grid than the 16x16 image"):
        lime(cnn, x, segments=32)
    with pytest.raises(ValueError, match="samples must be >= 2"):
        lime(cnn, x, samples=1)
    with pytest.raises(ValueError, match=r"unknown options \['windows'\] for 'lime'"):
        explain(cnn, x, None, ("lime",), options={"lime": {"windows": 3}})


# ------------------------------------------------------------------------ guided backprop, deconvnet, guided CAM


def _captum(method: str, model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    inputs = x.clone().requires_grad_()
    if method == "guided_gradcam":
        module = dict(model.named_modules())[layer]
        ref = captum_attr.GuidedGradCam(model, module).attribute(inputs, target=classes, interpolate_mode="bilinear")
    else:
        kind = captum_attr.GuidedBackprop if method == "guided_backprop" else captum_attr.Deconvolution
        ref = kind(model).attribute(inputs, target=classes)
    return ref.detach()


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
@pytest.mark.parametrize(
    ("model_name", "layer", "size", "batch"), [("cnn", "features.4", 16, 2), ("resnet", "layer3", 32, 1)]
)
def test_guided_methods_equal_captum(request, model_name, layer, size, batch):
    model = request.getfixturevalue(model_name)
    x = torch.rand(batch, 3, size, size)
    classes = torch.tensor([1, 2])[:batch]
    ours = {
        "guided_backprop": guided_backprop(model, x, classes),
        "deconvnet": deconvnet(model, x, classes),
        "guided_gradcam": guided_grad_cam(model, x, layer, classes),
    }
    for method, attr in ours.items():
        ref = _captum(method, model, layer, x, classes)
        assert attr.shape == x.shape
        torch.testing.assert_close(attr, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()), msg=method)
    if model_name == "resnet":
        return  # the engine's maps: checked once, on the small model
    out = explain(model, x, layer, tuple(ours), classes)
    for method, attr in ours.items():
        torch.testing.assert_close(out[method], normalize_maps(attr.abs().amax(dim=1)), msg=method)


class _FunctionalReLUs(nn.Module):
    """The same layers as ``_ModuleReLUs``, with every functional way of writing a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 6, 3, padding=1), *[nn.Conv2d(6, 6, 3, padding=1) for _ in range(4)]])
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.convs[0](x))
        x = F.relu(self.convs[1](x), inplace=True)
        x = self.convs[2](x)
        torch.relu_(x)  # the returned value is not used: the in-place op must stay in place
        x = self.convs[3](x).relu()
        x = F.relu(self.convs[4](x))
        return self.fc(x.mean(dim=(2, 3)))


class _ModuleReLUs(_FunctionalReLUs):
    def __init__(self) -> None:
        super().__init__()
        self.relus = nn.ModuleList([nn.ReLU(inplace=i % 2 == 1) for i in range(5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, relu in zip(self.convs, self.relus, strict=True):
            x = relu(conv(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_functional_and_inplace_relus_follow_the_rule_like_modules():
    torch.manual_seed(4)
    functional = _FunctionalReLUs().eval()
    modules = _ModuleReLUs().eval()
    modules.load_state_dict(functional.state_dict(), strict=False)
    x = torch.rand(2, 3, 12, 12)
    classes = torch.tensor([0, 3])
    torch.testing.assert_close(functional(x), modules(x))
    for method, ours in (("guided_backprop", guided_backprop), ("deconvnet", deconvnet)):
        ref = _captum(method, modules, "", x, classes)
        torch.testing.assert_close(ours(functional, x, classes), ref, rtol=1e-4, atol=1e-7, msg=method)
        torch.testing.assert_close(ours(modules, x, classes), ref, rtol=1e-4, atol=1e-7, msg=method)
    plain = torch.autograd.grad(functional(x.requires_grad_()).gather(1, classes[:, None]).sum(), x)[0]
    assert not torch.allclose(plain, guided_backprop(functional, x, classes))  # the rule really changed


class _RaisesAfterReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F.relu(self.relu(self.conv(x)), inplace=True)
        raise RuntimeError("boom")


def _relu_entry_points() -> list[object]:
    return [torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_, nn.ReLU.forward]


def test_the_relu_rule_lasts_one_pass_and_nothing_stays_patched_also_when_the_forward_raises():
    before = _relu_entry_points()
    model = _RaisesAfterReLU()
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(model, torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(RuntimeError, match="boom"), relu_rule("deconvnet"):
        model(torch.rand(1, 3, 8, 8))
    assert _relu_entry_points() == before
    assert torch._C._len_torch_function_stack() == 0  # the mode is gone
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    up = torch.tensor([5.0, -7.0, 11.0])
    for relu in (torch.relu, F.relu, nn.ReLU(), lambda t: t.clone().relu_()):
        assert torch.autograd.grad((relu(x) * up).sum(), x)[0].tolist() == [0.0, -7.0, 11.0]  # ordinary again
    with relu_rule("guided"):
        assert torch.autograd.grad((F.relu(x) * up).sum(), x)[0].tolist() == [0.0, 0.0, 11.0]
    with pytest.raises(ValueError, match="rule must be one of"), relu_rule("backprop"):  # type: ignore[arg-type]
        pass


# ------------------------------------------------------------------------------------------------- callback


def test_callback_logs_the_new_methods_and_leaves_training_bit_identical(tmp_path):
    methods = ("gradcam", "lime", "guided_backprop", "deconvnet", "guided_gradcam")

    def run(callbacks):
        pl.seed_everything(7)
        model = TinyCNN()
        train = DataLoader(make_dataset(16, seed=1), batch_size=8, shuffle=True)
        val = DataLoader(make_dataset(8, seed=2), batch_size=8)
        logger = TensorBoardLogger(str(tmp_path), name=str(bool(callbacks)))
        t = trainer(tmp_path, logger=logger, callbacks=callbacks, max_epochs=2)
        t.fit(model, train, val)
        return t, model.state_dict(), torch.rand(3)

    cb = ExplainCallback(
        "features.3",
        methods=("gradcam", "lime", "guided_backprop", "deconvnet", "guided_grad_cam"),
        num_probe=3,
        method_options={"lime": {"samples": 16, "segments": 4, "every_n_epochs": 2}},
        metrics=False,  # the focus and drift numbers of new methods are tested with the others in test_methods
        strict=True,
    )
    t, with_cb, rng_with = run([cb])
    _, without, rng_without = run([])
    for key in with_cb:
        assert torch.equal(with_cb[key], without[key]), key
    assert torch.equal(rng_with, rng_without)
    images = read_event_images(t.logger.log_dir)
    assert [s for s, _ in images["explain/lime"]] == [1]  # epoch 0 only (every 2 epochs)
    for method in methods[2:]:
        assert [s for s, _ in images[f"explain/{method}"]] == [1, 3], method
        assert images[f"explain/{method}"][0][1].std() > 0, method
