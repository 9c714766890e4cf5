"""Attention maps in bounded memory (AttentionFold) against today's dense math, on torchvision, timm and HF ViTs.

The reference is the dense computation as it was before the fold: every layer's ``[B, heads, T, T]`` attention and
its gradient kept at once (``hooked_pass(..., grad_attention=True)``), then the rollout, gradient rollout and
class-token maps computed over the whole list with the functions copied below.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import pytest
import torch
import torchvision
from conftest import require_module
from torch import Tensor, nn

from lightning_explain.capture import capture_attention
from lightning_explain.functional import explain, vit_layout
from lightning_explain.functional.attention_fold import AttentionFold
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.vit_layouts import ViTLayout

CLASSES = 5


# ---------------------------------------------------------------- today's dense math (reference copy, float64)


def _grid(rows: Tensor, layout: ViTLayout) -> Tensor:
    return rows[..., layout.num_prefix_tokens :].reshape(*rows.shape[:-1], *layout.grid)


def dense_rollout(attentions: list[Tensor], layout: ViTLayout, head_fusion: str, discard_ratio: float) -> Tensor:
    rollout = None
    for attn in attentions:
        fused = {"mean": attn.mean(1), "max": attn.amax(1), "min": attn.amin(1)}[head_fusion].double()
        batch, tokens, _ = fused.shape
        count = int(discard_ratio * tokens * (tokens - 1))
        if count:
            flat = fused.reshape(batch, -1)
            diagonal = torch.eye(tokens, dtype=torch.bool).reshape(1, -1)
            lowest = flat.masked_fill(diagonal, float("inf")).topk(count, dim=1, largest=False).indices
            fused = flat.scatter(1, lowest, 0.0).reshape(batch, tokens, tokens)
        mixed = 0.5 * fused + 0.5 * torch.eye(tokens, dtype=torch.float64)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    assert rollout is not None
    return _grid(rollout[:, 0], layout)


def dense_grad_rollout(attentions: list[Tensor], grads: list[Tensor], layout: ViTLayout) -> Tensor:
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, dtype=torch.float64).expand(attentions[0].shape[0], -1, -1)
    for attn, grad in zip(attentions, grads, strict=True):
        relevance = relevance + torch.relu(grad.double() * attn.double()).mean(1) @ relevance
    return _grid(relevance[:, 0], layout)


# ---------------------------------------------------------------- tiny random ViTs of the three kinds


def _strong(head: nn.Linear) -> None:
    nn.init.normal_(head.weight, std=0.5)  # torchvision zero-initialises its head: no gradient would flow
    nn.init.normal_(head.bias, std=0.1)


def tv_vit() -> tuple[nn.Module, Callable | None]:
    model = torchvision.models.VisionTransformer(32, 8, 4, 4, 32, 64, num_classes=CLASSES)
    _strong(model.heads.head)
    return model.eval(), None


def timm_vit() -> tuple[nn.Module, Callable | None]:
    vision_transformer = require_module("timm.models.vision_transformer")
    model = vision_transformer.VisionTransformer(
        img_size=(32, 48), patch_size=8, embed_dim=32, depth=4, num_heads=4, num_classes=CLASSES, reg_tokens=2
    )
    _strong(model.head)
    return model.eval(), None


def hf_vit() -> tuple[nn.Module, Callable | None]:
    transformers = require_module("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=CLASSES,
    )
    model = transformers.ViTForImageClassification(config)
    _strong(model.classifier)
    return model.eval(), lambda output: output.logits


KINDS = {"torchvision": tv_vit, "timm": timm_vit, "hf": hf_vit}


def _images(layout: ViTLayout, batch: int = 3) -> Tensor:
    gh, gw = layout.grid
    return torch.rand(batch, 3, 8 * gh, 8 * gw, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rollout_options", [{}, {"head_fusion": "max", "discard_ratio": 0.5}])
def test_folded_maps_equal_the_dense_computation(kind: str, rollout_options: dict) -> None:
    model, transform = KINDS[kind]()
    layout = vit_layout(model)
    x = _images(layout)
    dense = hooked_pass(model, x, None, attention=layout, grad_attention=True, output_transform=transform)
    assert len(dense.attentions) == layout.depth
    out = explain(
        model,
        x,
        None,
        ("attention", "rollout", "grad_rollout"),
        upsample=False,
        normalize=False,
        output_transform=transform,
        options={"rollout": rollout_options, "attention": {"layer": 1}},
    )
    grad_ref = dense_grad_rollout(dense.attentions, dense.attention_grads, layout)
    assert grad_ref.abs().amax() > 1e-3, "the gradient rollout reference is flat: the test would prove nothing"
    torch.testing.assert_close(out["grad_rollout"].double(), grad_ref, atol=1e-5, rtol=1e-5)
    rollout_ref = dense_rollout(
        dense.attentions, layout, **{"head_fusion": "mean", "discard_ratio": 0.0, **rollout_options}
    )
    torch.testing.assert_close(out["rollout"].double(), rollout_ref, atol=1e-5, rtol=1e-5)
    heads_ref = _grid(dense.attentions[1][:, :, 0].double(), layout)
    torch.testing.assert_close(out.attention_heads.double(), heads_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out["attention"].double(), heads_ref.mean(1), atol=1e-6, rtol=1e-6)
    layers_ref = torch.stack([_grid(a[:, :, 0].double(), layout).mean(1) for a in dense.attentions], dim=1)
    torch.testing.assert_close(out.attention_layers.double(), layers_ref, atol=1e-6, rtol=1e-6)


def test_no_layer_outlives_its_fold_in_a_no_grad_pass() -> None:
    """Rollout keeps one running product: when layer l is folded, no earlier layer's attention is alive."""
    model, _ = timm_vit()
    layout = vit_layout(model)
    fold = AttentionFold(layout, class_rows=True, rollout={})
    earlier: list[weakref.ref[Tensor]] = []
    alive_at_each_layer: list[int] = []

    shared: list[bool] = []

    def on_layer(weights: Tensor) -> None:
        alive_at_each_layer.append(sum(ref() is not None for ref in earlier))
        earlier.append(weakref.ref(weights))
        fold(weights)
        kept = (fold.class_rows[-1], fold._rollout)  # a view of the layer would keep all of it alive
        shared.append(any(t.untyped_storage().data_ptr() == weights.untyped_storage().data_ptr() for t in kept))

    with torch.no_grad(), capture_attention(model, layout, on_layer=on_layer) as kept:
        model(_images(layout))
    assert kept == [] and fold.count == layout.depth
    assert alive_at_each_layer == [0] * layout.depth
    assert [tuple(rows.shape) for rows in fold.class_rows] == [(3, 4, layout.num_tokens)] * layout.depth
    assert shared == [False] * layout.depth


def test_gradients_are_folded_one_at_a_time_in_reverse_depth_order() -> None:
    """In the backward each layer's gradient is folded and dropped before the next (earlier) layer's arrives."""
    model, _ = tv_vit()
    layout = vit_layout(model)
    fold = AttentionFold(layout, grad_rollout=True)
    order: list[int] = []
    alive: list[int] = []
    grads: list[weakref.ref[Tensor]] = []
    original = fold._on_grad

    def spy(index: int, grad: Tensor) -> None:
        alive.append(sum(ref() is not None for ref in grads))
        grads.append(weakref.ref(grad))
        order.append(index)
        original(index, grad)

    fold._on_grad = spy  # type: ignore[method-assign]
    result = hooked_pass(model, _images(layout), None, attention=layout, attention_fold=fold)
    assert order == list(range(layout.depth - 1, -1, -1))
    assert alive == [0] * layout.depth
    assert result.attentions == [] and result.attention_grads == []
    assert fold.first is None and not fold._handles and not fold._pending


def test_gradients_arriving_out_of_depth_order_give_the_same_map() -> None:
    """Independent branches (no chain between the layers): autograd may deliver them in any order."""
    layout = ViTLayout("timm", 1, (2, 2), ("a0", "a1", "a2"), ("b0", "b1", "b2"), 4)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(2, 4, 5, 5, generator=generator, requires_grad=True)  # the "images" every layer depends on
    weights = [torch.randn(2, 4, 5, 5, generator=generator) for _ in range(3)]
    attentions = [torch.softmax(base * (1.0 + layer), -1) for layer in range(3)]
    fold = AttentionFold(layout, grad_rollout=True)
    for attn in attentions:
        fold(attn)
    assert fold.first is attentions[0]
    score = sum((a * w).sum() for a, w in zip(attentions, weights, strict=True))
    torch.autograd.grad(score, [base])
    fold.finish()
    dense = dense_grad_rollout([a.detach() for a in attentions], weights, layout)
    torch.testing.assert_close(fold.grad_rollout_map().double(), dense, atol=1e-5, rtol=1e-5)


def test_bad_rollout_options_fail_before_the_pass() -> None:
    layout = ViTLayout("timm", 1, (2, 2), ("a0",), ("b0",), 4)
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        AttentionFold(layout, rollout={"head_fusion": "median"})
    with pytest.raises(ValueError, match=r"discard_ratio must lie in \[0, 1\)"):
        AttentionFold(layout, rollout={"discard_ratio": 1.0})
    with pytest.raises(ValueError, match="unknown rollout options"):
        AttentionFold(layout, rollout={"fusion": "max"})
