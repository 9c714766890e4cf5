"""ViT attention: capture, rollout, gradient rollout and token Grad-CAM on tiny random torchvision / timm / HF ViTs.

Every reference here is written independently of the code under test: attention recomputed from the modules' own
q/k projections, rollout as a plain loop over samples in float64, Grad-CAM through pytorch-grad-cam.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from conftest import require_module
from torch import Tensor, nn

from lightning_explain.functional import (
    ViTLayout,
    attention_rollout,
    capture_attention,
    cls_attention,
    default_token_layer,
    grad_rollout,
    normalize_maps,
    token_grad_cam,
    tokens_to_grid,
    upsample_maps,
    vit_attention,
    vit_grad_rollout,
    vit_layout,
    vit_rollout,
)

NUM_CLASSES = 5


def _strong_head(head: nn.Linear) -> None:
    # torchvision zero-initialises the classifier (every gradient would be zero); timm's is tiny. Make it matter.
    nn.init.normal_(head.weight, std=0.5)
    nn.init.normal_(head.bias, std=0.1)


def tv_vit(depth: int = 3) -> nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=depth, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=NUM_CLASSES
    )
    _strong_head(model.heads.head)
    return model.eval()


def timm_vit(depth: int = 3, **kwargs: Any) -> nn.Module:
    # A non-square grid (4 x 6) catches transposed reshapes. timm is a test-only dependency (require_module).
    vision_transformer = require_module("timm.models.vision_transformer")
    model = vision_transformer.VisionTransformer(
        img_size=(32, 48), patch_size=8, embed_dim=32, depth=depth, num_heads=4, num_classes=NUM_CLASSES, **kwargs
    )
    _strong_head(model.head)
    return model.eval()


def deit_distilled() -> nn.Module:
    timm = require_module("timm")
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=NUM_CLASSES,
    )
    _strong_head(model.head)
    _strong_head(model.head_dist)
    return model.eval()


def images(model: nn.Module, batch: int = 3, seed: int = 1) -> Tensor:
    gh, gw = vit_layout(model).grid  # every test model has 8 px patches
    return torch.rand(batch, 3, 8 * gh, 8 * gw, generator=torch.Generator().manual_seed(seed))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "torchvision": tv_vit,
    "timm": timm_vit,
    "deit_distilled": deit_distilled,
    "timm_registers": lambda: timm_vit(reg_tokens=4),
}


def assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_backward_hooks"):
            assert not getattr(module, attr, {}), f"{name}.{attr} still holds hooks"
        assert not getattr(module, "_forward_pre_hooks_with_kwargs", {}), name


def fused_flags(model: nn.Module) -> list[bool]:
    return [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


@contextmanager
def attention_inputs(model: nn.Module, layout: ViTLayout) -> Iterator[list[Tensor]]:
    """The tokens that enter each attention module (test-side pre-hooks)."""
    seen: list[Tensor] = []
    named = dict(model.named_modules())
    handles = [
        named[n].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
        for n in layout.attention_names
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def manual_attention(module: nn.Module, x: Tensor, kind: str) -> Tensor:
    """softmax(q k^T / sqrt(d)) from the module's own projection weights, float64."""
    x = x.double()
    batch, tokens, dim = x.shape
    if kind == "torchvision":
        heads = module.num_heads
        w, b = module.in_proj_weight.double(), module.in_proj_bias.double()
        q = x @ w[:dim].T + b[:dim]
        k = x @ w[dim : 2 * dim].T + b[dim : 2 * dim]
    elif kind == "timm":
        heads = module.num_heads
        qkv = x @ module.qkv.weight.double().T + module.qkv.bias.double()
        q, k = qkv[..., :dim], qkv[..., dim : 2 * dim]
    else:
        heads = module.num_attention_heads
        q = x @ module.q_proj.weight.double().T + module.q_proj.bias.double()
        k = x @ module.k_proj.weight.double().T + module.k_proj.bias.double()
    head_dim = dim // heads
    q = q.view(batch, tokens, heads, head_dim).transpose(1, 2)
    k = k.view(batch, tokens, heads, head_dim).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)


def reference_rollout(
    attentions: list[Tensor], prefix: int, grid: tuple[int, int], fusion: str, discard: float
) -> Tensor:
    """Abnar & Zuidema rollout, one sample at a time, in numpy float64."""
    batch, _, tokens, _ = attentions[0].shape
    out = []
    for b in range(batch):
        joint = np.eye(tokens)
        for attn in attentions:
            heads = attn[b].double().numpy()
            fused = {"mean": heads.mean(0), "max": heads.max(0), "min": heads.min(0)}[fusion].copy()
            if discard:
                off_diagonal = [(i, j) for i in range(tokens) for j in range(tokens) if i != j]
                off_diagonal.sort(key=lambda ij: fused[ij])
                for ij in off_diagonal[: int(discard * len(off_diagonal))]:
                    fused[ij] = 0.0
            mixed = 0.5 * fused + 0.5 * np.eye(tokens)
            mixed /= mixed.sum(axis=1, keepdims=True)
            joint = mixed @ joint
        out.append(joint[0, prefix:].reshape(grid))
    return torch.from_numpy(np.stack(out))


def reference_grad_rollout(attentions: list[Tensor], grads: list[Tensor], prefix: int, grid: tuple[int, int]) -> Tensor:
    """Chefer et al. generic rule, one sample at a time, float64."""
    out = []
    for b in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        relevance = np.eye(tokens)
        for attn, grad in zip(attentions, grads, strict=True):
            cam = np.maximum(grad[b].detach().double().numpy() * attn[b].detach().double().numpy(), 0.0).mean(0)
            relevance = relevance + cam @ relevance
        out.append(relevance[0, prefix:].reshape(grid))
    return torch.from_numpy(np.stack(out))


# --------------------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind", "prefix", "grid"),
    [
        ("torchvision", "torchvision", 1, (4, 4)),
        ("timm", "timm", 1, (4, 6)),
        ("deit_distilled", "timm", 2, (4, 4)),
        ("timm_registers", "timm", 5, (4, 6)),
    ],
)
def test_layout_detects_prefix_tokens_grid_and_modules(key: str, kind: str, prefix: int, grid: tuple[int, int]) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    assert (layout.kind, layout.num_prefix_tokens, layout.grid) == (kind, prefix, grid)
    named = dict(model.named_modules())
    assert len(layout.attention_names) == len(layout.block_names) == layout.depth >= 2
    for att, block in zip(layout.attention_names, layout.block_names, strict=True):
        assert att.startswith(block + ".")
        assert att in named and block in named
    if kind == "torchvision":
        assert all(isinstance(named[n], nn.MultiheadAttention) for n in layout.attention_names)
    else:
        assert all(hasattr(named[n], "fused_attn") for n in layout.attention_names)
    # Depth order: the block index at the end of each name counts up.
    assert [int(re.search(r"(\d+)$", n).group(1)) for n in layout.block_names] == list(range(layout.depth))


def test_layout_inside_a_wrapper_uses_names_relative_to_the_wrapper() -> None:
    wrapper = nn.Sequential(nn.Identity(), tv_vit())
    layout = vit_layout(wrapper)
    assert layout.attention_names[0] == "1.encoder.layers.encoder_layer_0.self_attention"
    x = images(wrapper[1], batch=2)
    with capture_attention(wrapper, layout) as attentions:
        wrapper(x)
    assert len(attentions) == 3
    assert vit_rollout(wrapper, x).shape == (2, 4, 4)
    assert_no_hooks(wrapper)


def test_unsupported_model_names_what_is_supported() -> None:
    with pytest.raises(ValueError, match=r"torchvision\.models\.VisionTransformer, timm VisionTransformer"):
        vit_layout(torchvision.models.resnet18(num_classes=3))


def test_avg_pooled_model_defaults_to_last_block() -> None:
    model = timm_vit(class_token=False, global_pool="avg")
    layout = vit_layout(model)
    assert not layout.has_class_token and not layout.pools_prefix_tokens and layout.num_prefix_tokens == 0
    assert default_token_layer(model, layout) == layout.block_names[-1]
    cam = token_grad_cam(model, images(model))
    assert cam.shape == (3, 4, 6) and cam.sum() > 0
    with pytest.raises(ValueError, match="class token"):
        vit_rollout(model, images(model))


# --------------------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("grad_mode", ["grad", "no_grad", "inference_mode"])
def test_captured_attention_equals_recomputation_from_q_k(key: str, grad_mode: str) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model, batch=2)
    kind = "torchvision" if layout.kind == "torchvision" else "timm"
    mode = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[grad_mode]
    with mode(), attention_inputs(model, layout) as inputs, capture_attention(model, layout) as attentions:
        model(x)
    named = dict(model.named_modules())
    assert len(attentions) == len(inputs) == layout.depth
    for name, tokens, attn in zip(layout.attention_names, inputs, attentions, strict=True):
        assert attn.shape == (2, layout.num_heads, layout.num_tokens, layout.num_tokens)
        assert not attn.requires_grad
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5, rtol=0)
        expected = manual_attention(named[name], tokens, kind)
        torch.testing.assert_close(attn.double(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("key", ["torchvision", "timm"])
def test_keep_graph_attention_carries_gradient_and_same_output(key: str) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    plain = model(x)
    with capture_attention(model, layout, keep_graph=True) as attentions:
        logits = model(x)
    # torchvision's own weights are a view made after their use: the capture must put them on the gradient path.
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(logits[:, 2].sum(), attentions, allow_unused=True)
    assert all(g is not None and g.abs().amax() > 0 for g in grads)


def test_capture_selected_layers_only() -> None:
    model = timm_vit()
    layout = vit_layout(model)
    x = images(model)
    with capture_attention(model, layout) as all_layers:
        model(x)
    with capture_attention(model, layout, layers=[-1, 0]) as some:
        assert fused_flags(model) == [False, True, False]
        model(x)
    assert len(some) == 2
    torch.testing.assert_close(some[0], all_layers[0])
    torch.testing.assert_close(some[1], all_layers[-1])


# --------------------------------------------------------------------------------------------------------------
# Restoration
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["torchvision", "timm", "deit_distilled"])
@pytest.mark.parametrize("keep_graph", [False, True])
def test_capture_restores_model_also_when_the_pass_raises(key: str, keep_graph: bool) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    fused = fused_flags(model)
    assert all(fused) or layout.kind == "torchvision"
    before = model(x)

    with capture_attention(model, layout, keep_graph=keep_graph) as attentions:
        model(x)
        if layout.kind == "timm":
            assert not any(fused_flags(model))
    assert len(attentions) == layout.depth
    assert_no_hooks(model)
    assert fused_flags(model) == fused

    # A failure after the attention hooks fired (a raising hook on the final norm) ...
    final_norm = model.encoder.ln if layout.kind == "torchvision" else model.norm

    def boom(*_: Any) -> None:
        raise RuntimeError("boom")

    handle = final_norm.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"), capture_attention(model, layout, keep_graph=keep_graph):
            model(x)
    finally:
        handle.remove()
    assert_no_hooks(model)
    assert fused_flags(model) == fused
    # ... and bad inputs that fail before any attention.
    with pytest.raises((AssertionError, RuntimeError)), capture_attention(model, layout, keep_graph=keep_graph):
        model(torch.rand(2, 3, 24, 24))
    assert_no_hooks(model)
    assert fused_flags(model) == fused

    after = model(x)
    assert torch.equal(before, after)  # need_weights / fused_attn are back: bit-identical forward


@pytest.mark.parametrize("key", ["torchvision", "timm"])
def test_convenience_functions_restore_model_on_error(key: str) -> None:
    model = MODELS[key]()
    fused = fused_flags(model)
    x = images(model)
    before = model(x)
    with pytest.raises(ValueError, match="target class indices"):
        vit_grad_rollout(model, x, targets=NUM_CLASSES + 3)
    with pytest.raises(ValueError, match="target class indices"):
        token_grad_cam(model, x, targets=-1)
    vit_attention(model, x)
    vit_rollout(model, x)
    assert_no_hooks(model)
    assert fused_flags(model) == fused
    assert torch.equal(before, model(x))


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.3])
def test_rollout_equals_per_sample_reference(batch: int, fusion: str, discard: float) -> None:
    model = timm_vit(reg_tokens=2)
    layout = vit_layout(model)
    x = images(model, batch=5)[:batch]
    with capture_attention(model, layout) as attentions:
        model(x)
    got = attention_rollout(attentions, layout, head_fusion=fusion, discard_ratio=discard)  # type: ignore[arg-type]
    assert got.dtype == torch.float32 and got.shape == (batch, 4, 6)
    expected = reference_rollout(attentions, 3, (4, 6), fusion, discard)  # 1 class + 2 register tokens
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
    one_pass = vit_rollout(model, x, head_fusion=fusion, discard_ratio=discard)  # type: ignore[arg-type]
    torch.testing.assert_close(one_pass, got)
    if batch > 1:  # no mixing of samples: each row equals the rollout of that image alone
        alone = vit_rollout(model, x[3:4], head_fusion=fusion, discard_ratio=discard)  # type: ignore[arg-type]
        torch.testing.assert_close(alone[0], got[3], atol=1e-6, rtol=1e-5)


def test_rollout_discard_changes_map_and_validates_arguments() -> None:
    model = tv_vit()
    x = images(model)
    assert not torch.allclose(vit_rollout(model, x), vit_rollout(model, x, discard_ratio=0.9))
    with pytest.raises(ValueError, match="discard_ratio"):
        vit_rollout(model, x, discard_ratio=1.0)
    with pytest.raises(ValueError, match="head_fusion"):
        vit_rollout(model, x, head_fusion="median")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", list(MODELS))
def test_vit_attention_is_class_row_of_chosen_layer_without_prefix_tokens(key: str) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    with capture_attention(model, layout) as attentions:
        model(x)
    prefix, (gh, gw) = layout.num_prefix_tokens, layout.grid
    for layer in (0, -1):
        mean, per_head = vit_attention(model, x, layer=layer)
        attn = attentions[layer]
        assert per_head.shape == (3, layout.num_heads, gh, gw) and mean.shape == (3, gh, gw)
        torch.testing.assert_close(per_head, attn[:, :, 0, prefix:].reshape(3, -1, gh, gw))
        torch.testing.assert_close(mean, per_head.mean(1))
        # All prefix tokens are dropped: the grid holds exactly the class row's mass outside them.
        torch.testing.assert_close(per_head.sum((2, 3)), 1 - attn[:, :, 0, :prefix].sum(-1))
    torch.testing.assert_close(cls_attention(attentions[1], layout), vit_attention(model, x, layer=1)[1])


@pytest.mark.parametrize("key", ["deit_distilled", "timm_registers", "torchvision"])
def test_tokens_to_grid_drops_prefix_and_keeps_row_major_order(key: str) -> None:
    layout = vit_layout(MODELS[key]())
    gh, gw = layout.grid
    tokens = torch.arange(layout.num_tokens, dtype=torch.float32)[None, :, None].expand(2, -1, 3)
    grid = tokens_to_grid(tokens, layout)
    assert grid.shape == (2, 3, gh, gw)
    expected = layout.num_prefix_tokens + torch.arange(gh)[:, None] * gw + torch.arange(gw)[None, :]
    assert torch.equal(grid[1, 2], expected.float())
    with pytest.raises(ValueError, match="tokens"):
        tokens_to_grid(tokens[:, 1:], layout)


@pytest.mark.parametrize("key", ["torchvision", "timm", "deit_distilled"])
def test_vit_grad_rollout_equals_reference_and_leaves_param_grad(key: str) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    targets = torch.tensor([0, 3, 1])
    with capture_attention(model, layout, keep_graph=True) as attentions:
        logits = model(x)
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), attentions)
    expected = reference_grad_rollout(attentions, list(grads), layout.num_prefix_tokens, layout.grid)

    assert all(p.grad is None for p in model.parameters())
    got = vit_grad_rollout(model, x, targets)
    assert all(p.grad is None for p in model.parameters())
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-4)
    # Class-specific on a random model; the callable form picks the same scores.
    other = vit_grad_rollout(model, x, 2)
    assert not torch.allclose(got, other, atol=1e-6)
    chosen = vit_grad_rollout(model, x, lambda out: out.gather(1, targets[:, None])[:, 0])
    torch.testing.assert_close(chosen, got)
    torch.testing.assert_close(grad_rollout(attentions, grads, layout).double(), expected, atol=1e-5, rtol=1e-4)


def test_grad_rollout_keeps_existing_param_grads() -> None:
    model = timm_vit()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    saved = [p.grad for p in model.parameters()]
    vit_grad_rollout(model, images(model))
    token_grad_cam(model, images(model))
    assert all(p.grad is g and bool((g == 7).all()) for p, g in zip(model.parameters(), saved, strict=True))


@pytest.mark.parametrize("key", ["torchvision", "timm"])
def test_everything_works_under_inference_mode(key: str) -> None:
    model = MODELS[key]()
    x = images(model)
    outside = [vit_attention(model, x)[1], vit_rollout(model, x), vit_grad_rollout(model, x), token_grad_cam(model, x)]
    with torch.inference_mode():
        x_inf = x.clone()
        inside = [
            vit_attention(model, x_inf)[1],
            vit_rollout(model, x_inf),
            vit_grad_rollout(model, x_inf),
            token_grad_cam(model, x_inf),
        ]
    for a, b in zip(outside, inside, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert inside[2].abs().sum() > 0 and inside[3].abs().sum() > 0
    assert_no_hooks(model)


# --------------------------------------------------------------------------------------------------------------
# Token Grad-CAM
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["torchvision", "timm", "deit_distilled"])
def test_default_token_layer_has_gradient_and_last_block_has_none(key: str) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    default = default_token_layer(model, layout)
    assert default == layout.block_names[-2]
    named = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}
    handles = [
        named[n].register_forward_hook(lambda _m, _a, out, n=n: outputs.__setitem__(n, out))
        for n in (default, layout.block_names[-1])
    ]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    for out in outputs.values():
        assert out.shape == (3, layout.num_tokens, out.shape[-1])  # [B, T, C], batch first
    g_default, g_last = torch.autograd.grad(logits[:, 1].sum(), [outputs[default], outputs[layout.block_names[-1]]])
    prefix = layout.num_prefix_tokens
    assert (g_default[:, prefix:].abs().amax(dim=(1, 2)) > 0).all()
    assert torch.equal(g_last[:, prefix:], torch.zeros_like(g_last[:, prefix:]))  # class-token pooling
    assert token_grad_cam(model, x).sum() > 0
    assert torch.equal(token_grad_cam(model, x, layout.block_names[-1]), torch.zeros(3, *layout.grid))


def _grad_cam_oracle(
    model: nn.Module, layer: nn.Module, x: Tensor, classes: list[int], prefix: int, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's raw (pre-normalisation) map and its final normalised, input-sized map."""
    GradCAM = require_module("pytorch_grad_cam").GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape(tokens: Tensor) -> Tensor:
        return tokens[:, prefix:, :].reshape(tokens.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)

    targets = [ClassifierOutputTarget(c) for c in classes]
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        final = cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, layer, targets, acts, grads)
    return np.maximum(raw, 0), final


@pytest.mark.parametrize("key", ["torchvision", "timm", "timm_registers"])
@pytest.mark.parametrize("use_default", [True, False])
def test_token_grad_cam_equals_pytorch_grad_cam(key: str, use_default: bool) -> None:
    model = MODELS[key]()
    layout = vit_layout(model)
    x = images(model)
    classes = [4, 0, 2]
    if use_default:
        name = default_token_layer(model, layout)
    else:  # the last block's pre-attention LayerNorm: also a working layer
        name = f"{layout.block_names[-1]}.{'ln_1' if layout.kind == 'torchvision' else 'norm1'}"
    ours = token_grad_cam(model, x, name if not use_default else None, torch.tensor(classes))
    model.zero_grad(set_to_none=True)
    raw, final = _grad_cam_oracle(
        model, dict(model.named_modules())[name], x, classes, layout.num_prefix_tokens, layout.grid
    )
    assert ours.shape == (3, *layout.grid) and ours.sum() > 0
    torch.testing.assert_close(ours.double(), torch.from_numpy(raw).double(), atol=1e-6, rtol=1e-4)
    # Same post-processing as pytorch-grad-cam: min-max, resize to the input, min-max.
    ours_final = normalize_maps(upsample_maps(normalize_maps(ours), (x.shape[-2], x.shape[-1])))
    torch.testing.assert_close(ours_final, torch.from_numpy(final).float(), atol=1e-3, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Hugging Face (optional)
# --------------------------------------------------------------------------------------------------------------


def _hf_vit() -> nn.Module:
    transformers = require_module("transformers")
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=NUM_CLASSES,
    )
    model = transformers.ViTForImageClassification(config)
    _strong_head(model.classifier)
    return model.eval()


def test_hf_vit_capture_rollout_and_grad_cam() -> None:
    model = _hf_vit()
    implementation = model.config._attn_implementation
    layout = vit_layout(model)
    assert (layout.kind, layout.num_prefix_tokens, layout.grid, layout.depth) == ("hf", 1, (4, 4), 3)
    x = images(model)
    before = model(x).logits
    named = dict(model.named_modules())
    with attention_inputs(model, layout) as inputs, capture_attention(model, layout) as attentions:
        assert model.config._attn_implementation == "eager"
        model(x)
    assert model.config._attn_implementation == implementation
    for name, tokens, attn in zip(layout.attention_names, inputs, attentions, strict=True):
        torch.testing.assert_close(attn.double(), manual_attention(named[name], tokens, "hf"), atol=1e-5, rtol=1e-4)
    assert vit_rollout(model, x).shape == (3, 4, 4)
    assert vit_grad_rollout(model, x).abs().sum() > 0
    assert default_token_layer(model, layout) == "vit.layers.1"
    assert token_grad_cam(model, x).sum() > 0

    def boom(*_: Any) -> None:
        raise RuntimeError("boom")

    handle = model.vit.layernorm.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"), capture_attention(model, layout):
            model(x)
    finally:
        handle.remove()
    assert model.config._attn_implementation == implementation
    assert_no_hooks(model)
    assert torch.equal(before, model(x).logits)
