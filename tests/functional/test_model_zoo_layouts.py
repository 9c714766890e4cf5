"""Model-zoo layouts against references at a documented layer, on NON-square inputs (so that a swapped H and W, a
column-major patch grid or a missing residual term cannot pass):

- timm ViT (img_size 32 x 48, patch 16: a 2 x 3 grid): ``vit_rollout`` equals attention rollout computed here in
  NumPy from the attention weights timm itself computes (``attn_drop``'s input, with ``fused_attn`` off), with
  ``A' = 0.5 A + 0.5 I`` rows renormalised (Abnar & Zuidema 2020), the class-token row reshaped row-major;
- timm Swin (NHWC stages, 64 x 96 input): Grad-CAM of ``layers.3`` equals Grad-CAM by hand from the stage's
  ``[B, H, W, C]`` output permuted to ``[B, C, H, W]``;
- a ViT patch grid with a known non-square structure: a map that is large on one patch only lands on that patch.
"""

from __future__ import annotations

import numpy as np
import torch
from conftest import require_module
from torch import nn

from lightning_explain.functional import explain
from lightning_explain.functional.vit import vit_rollout


def _timm_vit(img_size: tuple[int, int]) -> nn.Module:
    timm = require_module("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=img_size, depth=3, embed_dim=32, num_heads=2, num_classes=3
    )
    return model.eval()


def _timm_attentions(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Per block, the softmaxed attention ``[B, heads, T, T]`` timm computes (read at ``attn_drop``)."""
    seen: list[np.ndarray] = []
    handles = []
    for block in model.blocks:
        block.attn.fused_attn = False
        handles.append(
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(o.detach().double().numpy()))
        )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
    return seen


def _numpy_rollout(attentions: list[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    batch, _, tokens, _ = attentions[0].shape
    rollout = np.broadcast_to(np.eye(tokens), (batch, tokens, tokens))
    for a in attentions:
        mixed = 0.5 * a.mean(1) + 0.5 * np.eye(tokens)
        mixed = mixed / mixed.sum(-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout[:, 0, 1:].reshape(batch, *grid)  # the class token's row over the patches, row-major


def test_timm_vit_rollout_on_a_non_square_grid_equals_numpy_rollout():
    model = _timm_vit((32, 48))
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    got = vit_rollout(model, x).double().numpy()
    assert got.shape == (2, 2, 3)
    expected = _numpy_rollout(_timm_attentions(model, x), (2, 3))
    scale = expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got / got.max(axis=(1, 2), keepdims=True), expected / scale, atol=1e-5)
    # The check can fail: without the residual identity, or column-major, the map is another.
    without = np.array(expected)
    attn = _timm_attentions(model, x)
    plain = attn[0].mean(1)
    for a in attn[1:]:
        plain = a.mean(1) @ plain
    without = plain[:, 0, 1:].reshape(2, 2, 3)
    assert np.abs(without / without.max(axis=(1, 2), keepdims=True) - expected / scale).max() > 1e-3
    column_major = expected.reshape(2, -1).reshape(2, 3, 2).transpose(0, 2, 1)
    assert np.abs(column_major - expected).max() > 1e-3 * float(scale.max())


def _grad_cam_by_hand(
    model: nn.Module, x: torch.Tensor, module: nn.Module, nhwc: bool = False, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Grad-CAM of the predicted class at ``module``'s output, permuted from NHWC by hand when ``nhwc``, or read
    from tokens on ``grid``."""
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(score, [kept[0]])
    acts = kept[0].detach()
    if grid is not None:  # tokens [B, T, C]: drop the class token, patches row-major on the grid
        acts, grad = (t[:, 1:].reshape(t.shape[0], *grid, t.shape[-1]) for t in (acts, grad))
        nhwc = True
    if nhwc:
        acts, grad = acts.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    return torch.relu((grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1))


def test_timm_swin_nhwc_gradcam_on_a_non_square_input_equals_grad_cam_by_hand():
    timm = require_module("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=(64, 96), window_size=2, num_classes=3
    ).eval()
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    layer = "layers.3"
    result = explain(model, x, layer, ["gradcam"], upsample=False, normalize=False)
    expected = _grad_cam_by_hand(model, x, model.get_submodule(layer), nhwc=True)
    assert expected.shape == (2, 2, 3)  # 64 x 96 / 32: two rows, three columns
    assert float(expected.amax()) > 0
    torch.testing.assert_close(result["gradcam"], expected, atol=1e-5 * float(expected.amax()), rtol=1e-4)


def test_timm_vit_token_gradcam_on_a_non_square_grid_equals_grad_cam_by_hand():
    """Block 1 of 3 (the last block's patch tokens get no gradient through the class token). A column-major
    reshape of the 2 x 3 patch grid would be another map."""
    model = _timm_vit((32, 48))
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    result = explain(model, x, "blocks.1", ["gradcam"], upsample=False, normalize=False)
    expected = _grad_cam_by_hand(model, x, model.blocks[1], grid=(2, 3))
    assert expected.shape == (2, 2, 3) and float(expected.amax()) > 0
    torch.testing.assert_close(result["gradcam"], expected, atol=1e-5 * float(expected.amax()), rtol=1e-4)
    column_major = expected.reshape(2, 3, 2).transpose(1, 2)
    assert (column_major - expected).abs().max() > 1e-3 * float(expected.amax())
