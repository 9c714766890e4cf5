"""Vision transformers in the callback: attention, rollout, token Grad-CAM; nothing left changed."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from conftest import TinyCNN, loaders, read_event_images, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_explain import ExplainCallback
from lightning_explain.render import CAPTION_HEIGHT

timm = pytest.importorskip("timm")

VIT_METHODS = ("gradcam", "saliency", "attention", "rollout", "grad_rollout")


def torchvision_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(16, 4, 3, 2, 16, 32, num_classes=3)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zero-initialises the head
    return model


def timm_vit() -> nn.Module:
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
