"""The model zoo: architectures from torchvision, timm and Hugging Face transformers, built small and at random init.

One list, :data:`CASES`, imported by ``tests/functional/test_model_zoo.py`` and by ``benchmarks/model_zoo_table.py``
(which puts ``tests/`` on ``sys.path``). Nothing is downloaded: torchvision models with ``weights=None``, timm with
``pretrained=False``, Hugging Face models from a config object.

Each case writes down, independently of the package, the grid of the model's last spatial feature map (the one
global pooling or the class-token head reads from) for its input size. How each was derived is in the comment next
to it; ``test_model_zoo.py::test_expected_grid_is_the_models_own_last_feature_grid`` re-derives it from the
model's own feature API (timm ``forward_features``, Hugging Face ``output_hidden_states``, the torchvision module
that feeds the pooling) so that a typo in this table cannot agree with a wrong ``locate_layer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["CASES", "ZooCase", "build", "case_ids", "images"]

#: Number of classes of every model (small heads build fast).
NUM_CLASSES = 3


@dataclass(frozen=True)
class ZooCase:
    """One architecture of the zoo.

    Attributes:
        id: pytest id, ``<library>-<model>``.
        library: ``torchvision``, ``timm`` or ``transformers``.
        model: the model's name as the library spells it (and the tiny configuration, when not the stock one).
        build: builds the model at random init (returns it in train mode; the test calls ``.eval()``).
        size: input side in pixels (the smallest that works for the architecture).
        grid: the expected grid ``(H, W)`` of the model's last feature map for that input (see the comments).
        class_token: the model is a supported ViT with a class token (attention, rollout and grad_rollout work).
        grad_cam_layer: pytorch-grad-cam's documented target layer for the family (its README), or None.
        features: the model's own way to produce its last feature map, ``(model, x) -> Tensor``; the grid is read
            from it in the test (``[B, C, H, W]``, ``[B, H, W, C]`` or tokens ``[B, T, C]`` with ``feature_layout``).
        feature_layout: how ``features`` lays out its output: ``"nchw"``, ``"nhwc"`` or ``"tokens+N"`` (N prefix
            tokens before a square grid of patches).
        seed: the seed of weights and images (a different one where seed 0 gives a legitimately zero Grad-CAM).
        note: special handling, shown in the table.
        known_bug: a package bug this case shows (the default-layer test is a strict xfail with this reason).
    """

    id: str
    library: str
    model: str
    build: Callable[[], nn.Module]
    size: int
    grid: tuple[int, int]
    class_token: bool
    grad_cam_layer: str | None
    features: Callable[[nn.Module, Tensor], Tensor]
    feature_layout: str = "nchw"
    seed: int = 0
    note: str = ""
    known_bug: str = ""


def build(case: ZooCase) -> nn.Module:
    """The case's model at random init (seeded), in eval mode."""
    torch.manual_seed(case.seed)
    return case.build().eval()


def images(case: ZooCase, n: int = 2) -> Tensor:
    """``n`` seeded random images of the case's size."""
    generator = torch.Generator().manual_seed(case.seed)
    return torch.rand(n, 3, case.size, case.size, generator=generator)


def case_ids() -> list[str]:
    return [case.id for case in CASES]


def _input_of(module_name: str) -> Callable[[nn.Module, Tensor], Tensor]:
    """The input of a module (e.g. the global pooling): the feature map the classifier reads."""

    def features(model: nn.Module, x: Tensor) -> Tensor:
        seen: list[Tensor] = []
        handle = model.get_submodule(module_name).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        return seen[-1]

    return features


def _output_of(module_name: str) -> Callable[[nn.Module, Tensor], Tensor]:
    def features(model: nn.Module, x: Tensor) -> Tensor:
        with torch.no_grad():
            return model.get_submodule(module_name)(x)

    return features


def _timm_features(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.forward_features(x)  # type: ignore[operator]


def _hf_hidden(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    return hidden


def _hf_reshaped(model: nn.Module, x: Tensor) -> Tensor:
    """Swin: ``reshaped_hidden_states`` are ``[B, C, H, W]`` (the last one after the last stage)."""
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    return out.reshaped_hidden_states[-1]


# ----------------------------------------------------------------------------------------------------------------
# Builders. Imports stay inside them so that importing this module is cheap.


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES, **kwargs)

    return make


def _tv_vit() -> nn.Module:
    import torchvision

    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=NUM_CLASSES
    )
    # torchvision zero-initialises the head of a fresh ViT (docs/guides/inputs.md): every logit is 0 and every
    # gradient map is zero until it trains. Give the head the small random init timm uses.
    nn.init.trunc_normal_(model.heads.head.weight, std=0.02)
    return model


def _recalibrate_batchnorm(model: nn.Module, size: int, n: int = 16) -> nn.Module:
    """Set every BatchNorm's running statistics from one train-mode pass over ``n`` random images (cumulative
    average), as training would; the weights are not touched."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(123)))
    return model


def _googlenet() -> nn.Module:
    # GoogLeNet's own init (truncated normal, std 0.01) and BatchNorm's fresh running statistics (mean 0, var 1)
    # shrink the activations layer after layer: the logits are the same for every input (to ~1e-7) and Grad-CAM
    # is exactly 0 or ~1e-13. Statistics from one pass over random images (what a trained model has) fix that.
    import torchvision

    model = torchvision.models.googlenet(weights=None, num_classes=NUM_CLASSES, aux_logits=False, init_weights=True)
    return _recalibrate_batchnorm(model, 64)


def _tv_densenet() -> nn.Module:
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=NUM_CLASSES)


def _tv_maxvit() -> nn.Module:
    # maxvit_t's partition size 7 needs every stage's input divisible by 7 (224 px: 112, 56, 28, 14, 7), which is
    # slow here; the same class with partition size 2 runs on 64 px (stage inputs 32, 16, 8, 4, 2).
    from torchvision.models import MaxVit

    return MaxVit(
        input_size=(64, 64),
        stem_channels=16,
        partition_size=2,
        block_channels=[16, 32, 64, 64],
        block_layers=[1, 1, 1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=NUM_CLASSES,
    )


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)

    return make


_HF_VIT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=NUM_CLASSES,
)


def _hf(config_name: str, model_name: str, **config) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import transformers

        return getattr(transformers, model_name)(getattr(transformers, config_name)(**config))

    return make


def _shufflenet_features(model: nn.Module, x: Tensor) -> Tensor:
    """torchvision ShuffleNetV2 pools with ``x.mean([2, 3])`` in ``forward`` (no module): run its stages."""
    with torch.no_grad():
        return model.conv5(model.stage4(model.stage3(model.stage2(model.maxpool(model.conv1(x))))))


def _vit_tokens_tv(model: nn.Module, x: Tensor) -> Tensor:
    """torchvision ViT: the encoder's output tokens ``[B, 1 + gh * gw, C]``."""
    with torch.no_grad():
        return model.encoder(_tv_tokens_in(model, x))


def _tv_tokens_in(model: nn.Module, x: Tensor) -> Tensor:
    tokens = model._process_input(x)  # type: ignore[operator]
    cls = model.class_token.expand(x.shape[0], -1, -1)  # type: ignore[union-attr]
    return torch.cat([cls, tokens], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# The zoo. ``grid``: the last feature map's grid for ``size`` px, derived from the architecture's total stride
# (torchvision / timm CNNs: 32, so 64 px -> 2 x 2) or its patch grid (ViTs: size // patch); each comment says how.

_RESNET = "layer4[-1]"
_FEATURES = "features[-1]"
_VIT = "blocks[-1].norm1 + reshape"
_SWIN = "layers[-1].blocks[-1].norm1 + reshape"

# fmt: off
# Positional fields: id, library, model, build, size, grid, class_token, grad_cam_layer, features, feature_layout.
CASES: list[ZooCase] = [
    # --- torchvision ---------------------------------------------------------------------------------------------
    # stride 32 (stem 4, layer2-4 stride 2): 64 / 32 = 2
    ZooCase("tv-resnet18", "torchvision", "resnet18", _tv("resnet18"), 64, (2, 2), False, _RESNET,
            _input_of("avgpool")),
    # 5 max-pools: 64 / 32 = 2 (the adaptive pool to 7 x 7 after it only resamples)
    ZooCase("tv-vgg11", "torchvision", "vgg11", _tv("vgg11"), 64, (2, 2), False, _FEATURES, _output_of("features")),
    # stem 4, three transitions: 64 / 32 = 2
    ZooCase("tv-densenet", "torchvision", "DenseNet (densenet121 layout, growth 8, blocks 2-2-2-2)", _tv_densenet, 64,
            (2, 2), False, _FEATURES, _output_of("features"),
            note="densenet121 itself takes 5-15 s here (first passes of 120 layers): the same class, fewer layers"),
    # total stride 32: 64 / 32 = 2
    ZooCase("tv-mobilenet_v3_small", "torchvision", "mobilenet_v3_small", _tv("mobilenet_v3_small"), 64, (2, 2),
            False, _FEATURES, _output_of("features")),
    ZooCase("tv-efficientnet_b0", "torchvision", "efficientnet_b0", _tv("efficientnet_b0"), 64, (2, 2), False,
            _FEATURES, _output_of("features")),
    # stem 4 + three downsampling layers: 64 / 32 = 2
    ZooCase("tv-convnext_tiny", "torchvision", "convnext_tiny", _tv("convnext_tiny"), 64, (2, 2), False, None,
            _output_of("features")),
    # patch 4 + three patch mergings: 64 / 32 = 2 (features are NHWC)
    ZooCase("tv-swin_t", "torchvision", "swin_t", _tv("swin_t"), 64, (2, 2), False, _SWIN, _output_of("features"),
            "nhwc"),
    # stem 2 + four stages of stride 2: 64 / 32 = 2
    ZooCase("tv-maxvit", "torchvision", "MaxVit (maxvit_t layout, partition 2, 1 layer/stage)", _tv_maxvit, 64,
            (2, 2), False, None, _input_of("classifier"),
            note="maxvit_t needs 224 px (partition 7); the same class with partition size 2 runs on 64 px"),
    # conv 2, pool 2, conv, pool 2, pool 2, pool 2: 64 / 32 = 2
    ZooCase("tv-googlenet", "torchvision", "googlenet", _googlenet, 64, (2, 2), False, None,
            _input_of("avgpool"),
            note="BatchNorm statistics set from 16 random images: with fresh ones its logits do not depend on the "
            "input and Grad-CAM is 0 or ~1e-13"),
    # stem 2 + four stages of stride 2: 64 / 32 = 2
    ZooCase("tv-regnet_y_400mf", "torchvision", "regnet_y_400mf", _tv("regnet_y_400mf"), 64, (2, 2), False, None,
            _input_of("avgpool")),
    # conv 2, max-pool 2, three stages of stride 2: 64 / 32 = 2
    ZooCase("tv-shufflenet_v2_x0_5", "torchvision", "shufflenet_v2_x0_5", _tv("shufflenet_v2_x0_5"), 64, (2, 2),
            False, None, _shufflenet_features),
    # unpadded 3x3/2 conv and three ceil-mode 3x3/2 max-pools: 64 -> 31 -> 15 -> 7 -> 3
    ZooCase("tv-squeezenet1_1", "torchvision", "squeezenet1_1", _tv("squeezenet1_1"), 64, (3, 3), False, None,
            _input_of("classifier.3")),
    # total stride 32: 64 / 32 = 2
    ZooCase("tv-mnasnet0_5", "torchvision", "mnasnet0_5", _tv("mnasnet0_5"), 64, (2, 2), False, "layers[-1]",
            _output_of("layers")),
    # 32 px, patch 8: 4 x 4 patches + class token
    ZooCase("tv-vit", "torchvision", "VisionTransformer(32, 8, 2 layers, 2 heads, 32, 64)", _tv_vit, 32, (4, 4),
            True, _VIT, _vit_tokens_tv, "tokens+1",
            note="head re-initialised: torchvision zero-initialises it (every gradient map 0)"),
    # --- timm ------------------------------------------------------------------------------------------------
    # stride 32: 64 / 32 = 2 for the timm CNNs below (= feature_info[-1]['reduction'])
    ZooCase("timm-resnet18d", "timm", "resnet18d", _timm("resnet18d"), 64, (2, 2), False, _RESNET, _timm_features,
            seed=1, note="seed 1: with seed 0 the class evidence is all negative (Grad-CAM 0 after its ReLU)"),
    ZooCase("timm-convnext_atto", "timm", "convnext_atto", _timm("convnext_atto"), 64, (2, 2), False, None,
            _timm_features),
    ZooCase("timm-mobilenetv3_small_050", "timm", "mobilenetv3_small_050", _timm("mobilenetv3_small_050"), 64,
            (2, 2), False, _FEATURES, _timm_features),
    ZooCase("timm-efficientnet_b0", "timm", "efficientnet_b0", _timm("efficientnet_b0"), 64, (2, 2), False, None,
            _timm_features),
    ZooCase("timm-lcnet_050", "timm", "lcnet_050", _timm("lcnet_050"), 64, (2, 2), False, None, _timm_features),
    # 32 px, patch 16: 2 x 2 patches after class + 4 register tokens
    ZooCase("timm-vit_reg4", "timm", "vit_small_patch16_224 (reg_tokens=4, depth 2, dim 32)",
            _timm("vit_small_patch16_224", reg_tokens=4, depth=2, embed_dim=32, num_heads=2, img_size=32), 32,
            (2, 2), True, _VIT, _timm_features, "tokens+5"),
    # 32 px, patch 16: class + distillation token
    ZooCase("timm-deit_tiny_distilled", "timm", "deit_tiny_distilled_patch16_224 (depth 2)",
            _timm("deit_tiny_distilled_patch16_224", depth=2, img_size=32), 32, (2, 2), True, _VIT, _timm_features,
            "tokens+2"),
    ZooCase("timm-deit3_small", "timm", "deit3_small_patch16_224 (depth 2)",
            _timm("deit3_small_patch16_224", depth=2, img_size=32), 32, (2, 2), True, _VIT, _timm_features,
            "tokens+1"),
    # 28 px, patch 14: 2 x 2
    ZooCase("timm-eva02_tiny", "timm", "eva02_tiny_patch14_224 (depth 2)",
            _timm("eva02_tiny_patch14_224", depth=2, img_size=28), 28, (2, 2), True, _VIT, _timm_features,
            "tokens+1"),
    # 64 px, patch 4 + three mergings: 2 x 2 (NHWC)
    ZooCase("timm-swin_tiny", "timm", "swin_tiny_patch4_window7_224 (window 2)",
            _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=2), 64, (2, 2), False, _SWIN,
            _timm_features, "nhwc"),
    # overlapping patch embed 4 + three stride-2 stages: 64 / 32 = 2
    ZooCase("timm-pvt_v2_b0", "timm", "pvt_v2_b0", _timm("pvt_v2_b0"), 64, (2, 2), False, None, _timm_features),
    # ResNet-v2 stem only (stride 4) + 8 px patches on its features: 64 / 32 = 2 (= patch_embed.grid_size)
    ZooCase("timm-vit_tiny_r_s16_p8", "timm", "vit_tiny_r_s16_p8_224 (hybrid, depth 2)",
            _timm("vit_tiny_r_s16_p8_224", img_size=64, depth=2), 64, (2, 2), True, _VIT, _timm_features,
            "tokens+1"),
    # patch 4 + three stride-2 downsamplings: 64 / 32 = 2
    ZooCase("timm-poolformer_s12", "timm", "poolformer_s12", _timm("poolformer_s12"), 64, (2, 2), False, None,
            _timm_features),
    # --- Hugging Face transformers -----------------------------------------------------------------------------
    # 32 px, patch 8: 4 x 4 (+ class token; DeiT + distillation token)
    ZooCase("hf-vit", "transformers", "ViTForImageClassification (tiny config)",
            _hf("ViTConfig", "ViTForImageClassification", **_HF_VIT), 32, (4, 4), True, _VIT, _hf_hidden,
            "tokens+1"),
    ZooCase("hf-deit", "transformers", "DeiTForImageClassificationWithTeacher (tiny config)",
            _hf("DeiTConfig", "DeiTForImageClassificationWithTeacher", **_HF_VIT), 32, (4, 4), True, _VIT,
            _hf_hidden, "tokens+2"),
    ZooCase("hf-beit", "transformers", "BeitForImageClassification (tiny config)",
            _hf("BeitConfig", "BeitForImageClassification", **_HF_VIT), 32, (4, 4), True, _VIT, _hf_hidden,
            "tokens+1"),
    ZooCase("hf-dinov2", "transformers", "Dinov2ForImageClassification (tiny config)",
            _hf("Dinov2Config", "Dinov2ForImageClassification", hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8, num_labels=NUM_CLASSES),
            32, (4, 4), True, _VIT, _hf_hidden, "tokens+1"),
    # 32 px, patch 4 -> 8 x 8, one merging -> 4 x 4
    ZooCase("hf-swin", "transformers", "SwinForImageClassification (tiny config)",
            _hf("SwinConfig", "SwinForImageClassification", embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                window_size=2, image_size=32, patch_size=4, num_labels=NUM_CLASSES),
            32, (4, 4), False, _SWIN, _hf_reshaped),
    # patch 4, stages [1, 1] (one downsampling): 32 / 8 = 4
    ZooCase("hf-convnext", "transformers", "ConvNextForImageClassification (tiny config)",
            _hf("ConvNextConfig", "ConvNextForImageClassification", num_stages=2, hidden_sizes=[8, 16],
                depths=[1, 1], num_labels=NUM_CLASSES),
            32, (4, 4), False, None, _hf_hidden),
    # embedder stride 4, stages [1, 1] (the second one downsamples): 32 / 8 = 4
    ZooCase("hf-resnet", "transformers", "ResNetForImageClassification (tiny config)",
            _hf("ResNetConfig", "ResNetForImageClassification", embedding_size=8, hidden_sizes=[8, 16],
                depths=[1, 1], layer_type="basic", num_labels=NUM_CLASSES),
            32, (4, 4), False, _RESNET, _hf_hidden),
]
# fmt: on
