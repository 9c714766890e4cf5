"""Layer layouts, the default layer, model outputs and integer images at the functional level (issue: any model)."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from lightning_explain.functional import (
    LayoutError,
    explain,
    grad_cam,
    infer_layout,
    locate_layer,
)
from lightning_explain.functional.layouts import FeatureLayout, grid_pyramid
from lightning_explain.functional.targets import read_output

GRIDS = grid_pyramid((32, 32))


@pytest.mark.parametrize(
    ("shape", "kind", "grid", "prefix"),
    [
        ((2, 64, 8, 8), "nchw", (8, 8), 0),
        ((2, 8, 8, 64), "nhwc", (8, 8), 0),
        ((2, 65, 32), "tokens", (8, 8), 1),  # class token
        ((2, 66, 32), "tokens", (8, 8), 2),  # class + distillation token
        ((2, 69, 32), "tokens", (8, 8), 5),  # class + 4 registers
        ((2, 16, 96), "tokens", (4, 4), 0),  # a Swin/PVT stage: no class token
        ((2, 4, 2, 768), "nhwc", (4, 2), 0),  # non-square grids keep their orientation
    ],
)
def test_layout_is_read_from_the_grid_not_the_largest_axis(shape, kind, grid, prefix):
    grids = grid_pyramid((32, 32)) | grid_pyramid((32, 16))
    layout = infer_layout(shape, grids)
    assert (layout.kind, layout.grid, layout.prefix_tokens) == (kind, grid, prefix)


def test_to_nchw_puts_each_channel_on_its_cell():
    nchw = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()
    tokens = torch.cat([torch.full((2, 1, 3), -1.0), nchw.flatten(2).transpose(1, 2)], dim=1)
    assert torch.equal(FeatureLayout("nhwc", (4, 5)).to_nchw(nhwc), nchw)
    assert torch.equal(FeatureLayout("tokens", (4, 5), 1).to_nchw(tokens), nchw)


def test_h_equal_w_equal_c_is_settled_by_the_module_or_raises_naming_the_argument():
    shape = (2, 8, 8, 8)
    assert infer_layout(shape, GRIDS, module=nn.Conv2d(8, 8, 1)).kind == "nchw"
    assert infer_layout(shape, GRIDS, module=nn.LayerNorm(8)).kind == "nhwc"
    assert infer_layout(shape, GRIDS, module=nn.ReLU(), preceding="nhwc").kind == "nhwc"
    assert infer_layout(shape, GRIDS, module=nn.ReLU(), forced="nchw").kind == "nchw"
    with pytest.raises(LayoutError, match=r"\[2, 8, 8, 8\].*layer_layout='nchw' or layer_layout='nhwc'"):
        infer_layout(shape, GRIDS, module=nn.ReLU())
    with pytest.raises(LayoutError, match=r"not a spatial map"):
        infer_layout((2, 10), GRIDS)


class ChannelsLastNet(nn.Module):
    """A stage that hands on [B, H, W, C] with H = W = C, then pools: a shape that fools any axis-size guess."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)  # 32 px -> 8 x 8, 8 channels
        self.norm = nn.LayerNorm(8)
        self.act = nn.GELU()
        self.head = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.norm(self.stem(x).permute(0, 2, 3, 1)))  # [B, 8, 8, 8] channels-last
        return self.head(y.mean(dim=(1, 2)))


def test_channels_last_output_with_h_w_c_equal_gives_the_same_map_as_its_nchw_view():
    torch.manual_seed(0)
    model = ChannelsLastNet().eval()
    x = torch.rand(2, 3, 32, 32)
    choice = locate_layer(model, x)
    assert (choice.name, choice.layout.kind) == ("act", "nhwc")  # decided by the preceding LayerNorm output
    cam = grad_cam(model, x, "act", upsample=False, normalize=False)
    acts: list[Tensor] = []
    handle = model.act.register_forward_hook(lambda m, i, o: acts.append(o))
    out = model(x.requires_grad_(False))
    handle.remove()
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), acts)
    a, g = acts[0].detach().permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(cam, expected)
    wrong = torch.relu((g.permute(0, 3, 2, 1).mean(dim=(2, 3), keepdim=True) * a.permute(0, 3, 2, 1)).sum(1))
    assert not torch.allclose(cam, wrong)  # reading it channels-first would give another map


@pytest.mark.parametrize(
    ("build", "size", "layer", "grid"),
    [
        (lambda: torchvision.models.resnet18(num_classes=3), 64, "layer4.1", (2, 2)),
        (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), 64, "features.12", (2, 2)),
        (lambda: torchvision.models.swin_t(num_classes=3), 64, "permute", (2, 2)),
        (lambda: timm.create_model("mobilenetv3_small_050", num_classes=3), 64, "blocks.5.0", (2, 2)),
        (lambda: timm.create_model("resnet18d", num_classes=3), 64, "layer4.1", (2, 2)),
        (
            lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=3, img_size=64, window_size=2),
            64,
            "norm",
            (2, 2),
        ),
    ],
    ids=["tv-resnet18", "tv-mobilenetv3", "tv-swin", "timm-mobilenetv3", "timm-resnet18d", "timm-swin"],
)
def test_default_layer_is_the_last_block_before_pooling_with_a_non_flat_map(build, size, layer, grid):
    torch.manual_seed(1)  # (seed 0 gives timm's resnet18d an all-negative class evidence: Grad-CAM's ReLU makes it 0)
    model = build().eval()
    x = torch.rand(2, 3, size, size)
    choice = locate_layer(model, x)
    assert (choice.name, choice.layout.grid) == (layer, grid)
    cam = explain(model, x, None, ["gradcam"], upsample=False, normalize=False)["gradcam"]
    assert cam.shape[-2:] == grid and torch.isfinite(cam).all() and cam.flatten(1).std(1).min() > 0


def test_class_token_model_skips_blocks_whose_patch_tokens_get_no_gradient():
    """An unrecognised ViT-like model that reads only its class token: the last block's patch tokens do not reach
    the score, so the block before is chosen (its map is not zero)."""

    class TinyViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 16, 8, stride=8)
            self.cls = nn.Parameter(torch.randn(1, 1, 16))
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True) for _ in range(3))
            self.head = nn.Linear(16, 3)

        def forward(self, x: Tensor) -> Tensor:
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
            for block in self.blocks:
                t = block(t)
            return self.head(t[:, 0])

    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.rand(2, 3, 32, 32)
    choice = locate_layer(model, x)
    assert choice.name == "blocks.1" and choice.layout.describe() == "tokens [B, 1+4x4, C]"
    assert explain(model, x, None, ["gradcam"])["gradcam"].flatten(1).amax(1).min() > 0
    assert explain(model, x, "blocks.2", ["gradcam"])["gradcam"].abs().max() == 0  # what the old default gave


def test_dict_model_output_and_dense_output_need_no_output_transform():
    torch.manual_seed(0)
    seg = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=4, aux_loss=False
    ).eval()
    x = torch.rand(1, 3, 64, 64)
    out = explain(seg, x, "backbone.layer4", ["gradcam"])
    dense = seg(x)["out"]
    covering = torch.bincount(dense.argmax(1).flatten(), minlength=4).argmax()
    assert out.targets.tolist() == [int(covering)]  # predicted = the class covering most pixels
    assert out["gradcam"].flatten(1).std(1).min() > 0


def test_dense_scores_sum_each_class_over_its_own_pixels():
    dense = torch.zeros(1, 3, 2, 2)
    dense[0, 0] = torch.tensor([[5.0, 0.0], [0.0, 0.0]])  # class 0 wins one pixel with a large score
    dense[0, 2] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # class 2 wins three pixels
    scores = read_output(dense)
    assert scores.logits.tolist() == [[5.0, 0.0, 3.0]] and scores.predicted.tolist() == [2] and scores.dense


def test_output_transform_errors_say_what_went_in():
    model = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(
        ValueError, match=r"output_transform raised KeyError: 0; it was given a tensor of shape \[1, 3\]"
    ):
        grad_cam(model, torch.rand(1, 3, 32, 32), "layer4", output_transform=lambda out: {"a": out}[0])
    with pytest.raises(ValueError, match=r"keys \['aux', 'x'\].*lambda out: out\[\"aux\"\]"):
        read_output({"aux": torch.zeros(1, 3), "x": torch.zeros(1, 3)})


def test_uint8_images_work_for_layer_methods_and_name_the_methods_that_need_floats():
    class Converts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torchvision.models.resnet18(num_classes=3)

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x.float() / 255)

    torch.manual_seed(0)
    model = Converts().eval()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = explain(model, x, None, ["gradcam", "activations"])
    expected = explain(model, x.float(), "net.layer4.1", ["gradcam"], output_transform=None)
    assert out["gradcam"].shape == (2, 64, 64) and out["gradcam"].flatten(1).std(1).min() > 0
    torch.testing.assert_close(out["gradcam"], expected["gradcam"])  # the model converted the uint8 pixels itself
    with pytest.raises(TypeError, match=r"\['saliency', 'occlusion'\] differentiate or perturb the image itself"):
        explain(model, x, None, ["gradcam", "saliency", "occlusion"])
