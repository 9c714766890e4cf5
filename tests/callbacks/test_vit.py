"""Vision transformers in the callback: attention, rollout, token Grad-CAM; nothing left changed."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from conftest import (
    TinyCNN,
    assert_overlay_cells,
    grid_cells,
    loaders,
    make_dataset,
    read_event_images,
    require_module,
    trainer,
)
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_explain import ExplainCallback
from lightning_explain.functional import (
    grad_cam,
    normalize_maps,
    upsample_maps,
    vit_attention,
    vit_grad_rollout,
    vit_rollout,
)
from lightning_explain.output.render import CAPTION_HEIGHT, to_display

VIT_METHODS = ("gradcam", "saliency", "attention", "rollout", "grad_rollout")


def torchvision_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(16, 4, 3, 2, 16, 32, num_classes=3)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zero-initialises the head
    return model


def timm_vit() -> nn.Module:
    timm = require_module("timm")
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=4,
        depth=2,
        num_heads=2,
        embed_dim=16,
        num_classes=3,
    )


class ViTModule(pl.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def test_torchvision_vit_logs_attention_rollout_and_token_grad_cam(tmp_path):
    cb = ExplainCallback(methods=VIT_METHODS, num_probe=5, strict=True)
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[cb], max_epochs=2)
    t.fit(ViTModule(torchvision_vit()), *loaders())
    assert cb._layer_name == "net.encoder.layers.encoder_layer_1"  # the default: second-to-last block
    images = read_event_images(t.logger.log_dir)
    expected = {f"explain/{m}" for m in VIT_METHODS} | {"explain/attention_heads", "explain/attention_layers"}
    assert set(images) == expected
    assert all(len(images[tag]) == 2 for tag in images)
    cell = 128 + 2  # 16 px images enlarged 8x
    _, layers = images["explain/attention_layers"][-1]
    assert layers.shape == (4 * (CAPTION_HEIGHT + cell) + 2, (1 + 3) * cell + 2, 3)  # 4 images, input + 3 layers
    _, heads = images["explain/attention_heads"][-1]
    assert heads.shape[1] == (1 + 2) * cell + 2  # input + 2 heads
    _, cam = images["explain/gradcam"][-1]
    assert cam.shape[0] == 5 * (CAPTION_HEIGHT + cell) + 2
    for m in VIT_METHODS:
        assert f"explain/{m}/drift/emd_chance" in t.callback_metrics


def test_vit_cells_are_the_functional_attention_rollout_and_grad_rollout_maps(tmp_path):
    cb = ExplainCallback(methods=VIT_METHODS, num_probe=5, cell_size=32, strict=True)
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[cb], max_epochs=1)
    module = ViTModule(torchvision_vit())
    t.fit(module, *loaders())
    images = {tag: events[-1][1] for tag, events in read_event_images(t.logger.log_dir).items()}
    module.eval()
    probe = make_dataset(24, seed=2).tensors[0][:5]
    display = to_display(probe)

    def shown(maps: Tensor) -> Tensor:  # as the callback shows token-grid maps: resized to the image, min-max
        return normalize_maps(upsample_maps(maps, (16, 16)))

    mean, heads = vit_attention(module, probe)  # the last layer, as the callback's default
    per_layer = torch.stack([vit_attention(module, probe, layer=i)[0] for i in range(2)], dim=1)
    expected = {
        "gradcam": grad_cam(module, probe, None),  # the default layer, as the callback's
        "attention": shown(mean),
        "attention_heads": shown(heads)[:4],  # the strips show the first 4 probe images
        "attention_layers": shown(per_layer)[:4],
        "rollout": shown(vit_rollout(module, probe)),
        "grad_rollout": shown(vit_grad_rollout(module, probe)),
    }
    for name, maps in expected.items():
        assert (maps.flatten(2 if maps.ndim == 4 else 1).std(-1) > 0.05).all(), name  # maps with something in them
        assert_overlay_cells(images[f"explain/{name}"], display[: maps.shape[0]], maps, cell_size=32, what=name)
    assert len(grid_cells(images["explain/attention_heads"], probe.shape, 32, 0)) == 4
    with pytest.raises(AssertionError, match="differs by"):  # rollout is not plain last-layer attention
        assert_overlay_cells(images["explain/rollout"], display, expected["attention"], cell_size=32)


def _fused_flags(model: nn.Module) -> list[bool]:
    return [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


def test_timm_vit_training_is_bit_identical_and_fused_attention_restored(tmp_path):
    def run(callback):
        pl.seed_everything(3)
        module = ViTModule(timm_vit())
        flags = _fused_flags(module)
        train = DataLoader(loaders()[0].dataset, batch_size=8, shuffle=True)
        cbs = [callback] if callback else []
        t = trainer(tmp_path / str(callback is None), logger=False, callbacks=cbs, max_epochs=2)
        t.fit(module, train, loaders()[1])
        assert _fused_flags(module) == flags and any(flags)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
        return module.state_dict()

    with_cb = run(ExplainCallback(methods=VIT_METHODS, num_probe=4, strict=True))
    without = run(None)
    for key in with_cb:
        assert torch.equal(with_cb[key], without[key]), key


def test_vit_explains_under_trainer_validate(tmp_path):
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[ExplainCallback(methods=VIT_METHODS)])
    t.validate(ViTModule(timm_vit()), loaders()[1])
    assert "explain/grad_rollout" in read_event_images(t.logger.log_dir)


def test_attention_methods_on_a_cnn_fail_before_training(tmp_path):
    steps = []

    class Counting(TinyCNN):
        def training_step(self, batch, i):
            steps.append(i)
            return super().training_step(batch, i)

    t = trainer(tmp_path, logger=False, callbacks=[ExplainCallback(methods=("gradcam", "rollout"))])
    with pytest.raises(ValueError, match=r"\['rollout'\] read a vision transformer's attention.*not a supported ViT"):
        t.fit(Counting(), *loaders())
    assert steps == []


def test_a_layer_map_that_stays_flat_warns_once_naming_the_layer(tmp_path):
    """torchvision zero-initialises a fresh ViT's head, so no gradient reaches the body: every Grad-CAM map is flat.
    One warning names the maps and the layer and suggests a later one; training goes on."""
    net = torchvision.models.VisionTransformer(16, 4, 3, 2, 16, 32, num_classes=3)  # head left at zero
    for p in net.heads.parameters():
        p.requires_grad_(False)  # stays zero while training, so every epoch is flat
    cb = ExplainCallback(methods=("gradcam", "attention"), num_probe=2)
    with pytest.warns(UserWarning) as seen:
        t = trainer(tmp_path, logger=False, callbacks=[cb], max_epochs=2)
        t.fit(ViTModule(net), *loaders())
    flat = [str(w.message) for w in seen if "flat or not finite" in str(w.message)]
    assert len(flat) == 1 and "['gradcam']" in flat[0]
    assert "'net.encoder.layers.encoder_layer_1' (tokens [B, 1+4x4, C])" in flat[0]
    assert "target_layer=<a later block" in flat[0] and t.current_epoch == 2
