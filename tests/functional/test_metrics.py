"""Focus and drift metrics: hand-computed values, and scipy as the oracle (test-only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import require_module

from lightning_explain.epoch.history import MapMetrics, summarize
from lightning_explain.functional.metrics import (
    border_mask,
    com_shift,
    drift_report,
    emd,
    emd_bounds,
    energy_in_mask,
    focus_report,
    lift,
    mask_area,
    mask_auc,
    pointing_game,
    spearman,
    topk_iou,
)

scipy_stats = require_module("scipy.stats")


def _square_mask(size: int = 8, lo: int = 2, hi: int = 5, batch: int = 1) -> torch.Tensor:
    mask = torch.zeros(batch, size, size, dtype=torch.bool)
    mask[:, lo:hi, lo:hi] = True
    return mask


def test_uniform_map_scores_the_area_lift_zero_auc_half():
    mask = _square_mask()
    maps = torch.full((1, 8, 8), 0.7)
    r = 9 / 64
    assert mask_area(mask).item() == pytest.approx(r)
    assert energy_in_mask(maps, mask).item() == pytest.approx(r)
    assert lift(maps, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert mask_auc(maps, mask).item() == pytest.approx(0.5)
    assert math.isnan(pointing_game(maps, mask).item())  # a constant map is never a hit


def test_map_equal_to_the_mask_is_perfect():
    mask = _square_mask()
    maps = mask.float()
    assert energy_in_mask(maps, mask).item() == pytest.approx(1.0)
    assert lift(maps, mask).item() == pytest.approx(1.0)
    assert mask_auc(maps, mask).item() == pytest.approx(1.0)
    assert pointing_game(maps, mask).item() == 1.0


def test_map_on_the_background_has_negative_lift():
    mask = _square_mask()
    maps = (~mask).float() + 0.1 * mask.float()
    assert lift(maps, mask).item() < 0
    assert mask_auc(maps, mask).item() == pytest.approx(0.0)
    assert pointing_game(maps, mask).item() == 0.0
    # One pixel of tolerance lets a maximum right next to the mask count as a hit.
    near = torch.zeros(1, 8, 8)
    near[0, 1, 3] = 1.0
    assert pointing_game(near, mask).item() == 0.0
    assert pointing_game(near, mask, tolerance=1).item() == 1.0


def test_all_zero_map_and_degenerate_masks_are_nan_not_numbers():
    mask = _square_mask()
    zero = torch.zeros(1, 8, 8)
    for value in (energy_in_mask(zero, mask), lift(zero, mask), pointing_game(zero, mask)):
        assert math.isnan(value.item())
    full = torch.ones(1, 8, 8, dtype=torch.bool)
    assert math.isnan(lift(torch.rand(1, 8, 8), full).item())
    assert math.isnan(mask_auc(torch.rand(1, 8, 8), full).item())


def test_mask_auc_matches_mann_whitney_with_ties():
    g = torch.Generator().manual_seed(0)
    maps = (torch.rand(3, 10, 10, generator=g) * 4).round()  # many ties
    masks = torch.rand(3, 10, 10, generator=g) > 0.7
    ours = mask_auc(maps, masks)
    for i in range(3):
        inside, outside = maps[i][masks[i]].numpy(), maps[i][~masks[i]].numpy()
        u = scipy_stats.mannwhitneyu(inside, outside).statistic
        assert ours[i].item() == pytest.approx(u / (len(inside) * len(outside)), abs=1e-6)


def test_spearman_matches_scipy():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(4, 6, 6, generator=g) * 3).round()
    b = a + torch.rand(4, 6, 6, generator=g)
    ours = spearman(a, b)
    for i in range(4):
        ref = scipy_stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert math.isnan(spearman(torch.ones(1, 4, 4), torch.rand(1, 4, 4)).item())


def _grid_points(h: int, w: int) -> np.ndarray:
    side = max(h, w)
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / side, (np.arange(w) + 0.5) / side, indexing="ij")
    return np.stack([ys.ravel(), xs.ravel()], axis=1)


def _blobs(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Sums of three Gaussian blobs: the smooth, heavy-tailed maps a CAM gives."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.zeros(n, size, size)
    for i in range(n):
        for _ in range(3):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            width = 0.3 + torch.rand(1, generator=g).item() * size / 4
            out[i] += torch.rand(1, generator=g) * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return out


@pytest.mark.parametrize("size", [5, 8])
def test_emd_against_scipy_exact_wasserstein(size):
    """The exact optimal transport (scipy's linear program) lies between emd_bounds; emd is at most 0.004 below it."""
    g = torch.Generator().manual_seed(size)
    n = 6
    families = {
        "power": (torch.rand(n, size, size, generator=g) ** 4, torch.rand(n, size, size, generator=g) ** 4),
        "relu": (torch.randn(n, size, size, generator=g).relu(), torch.randn(n, size, size, generator=g).relu()),
        "blobs": (_blobs(n, size, g), _blobs(n, size, g)),
        "points": tuple(
            torch.nn.functional.one_hot(torch.randint(0, size * size, (n,), generator=g), size * size)
            .float()
            .view(n, size, size)
            for _ in range(2)
        ),
    }
    a, b = families["power"]
    b[0] = a[0]
    b[1] = torch.roll(a[1], 1, dims=1)
    pts = _grid_points(size, size)
    for name, (a, b) in families.items():
        ours = emd(a, b)
        lower, upper = emd_bounds(a, b)
        for i in range(n):
            pa, pb = (m[i].double().flatten().numpy() for m in (a, b))
            ref = scipy_stats.wasserstein_distance_nd(pts, pts, pa / pa.sum(), pb / pb.sum())
            assert ref - 0.004 <= ours[i].item() <= ref + 1e-5, name
            assert lower[i].item() - 1e-5 <= ref <= upper[i].item() + 1e-5, name
    assert emd(*families["power"])[0].item() < 1e-6


def test_drift_report_equals_one_metric_call_per_pair():
    """drift_report stacks prev, first and chance into one call per metric: the values are the per-pair ones."""
    g = torch.Generator().manual_seed(3)
    cur, prev, first = (torch.rand(4, 16, 16, generator=g) for _ in range(3))
    out = drift_report(cur, prev, first)
    assert torch.allclose(out["emd_prev"], emd(cur, prev), atol=1e-6)
    assert torch.allclose(out["emd_chance"], emd(cur, cur.roll(1, dims=0)), atol=1e-6)
    assert torch.allclose(out["spearman_first"], spearman(cur, first), atol=1e-6)
    assert torch.allclose(out["spearman_chance"], spearman(cur, cur.roll(1, dims=0)), atol=1e-6)
    assert torch.equal(out["topk_iou_prev"], topk_iou(cur, prev))
    assert torch.equal(out["topk_iou_chance"], topk_iou(cur, cur.roll(1, dims=0)))
    flat = torch.zeros(4, 16, 16)  # constant maps: NaN, also through the stacked path
    assert torch.isnan(drift_report(flat, prev)["topk_iou_prev"]).all()
    assert torch.isnan(drift_report(flat, prev)["spearman_prev"]).all()
    assert drift_report(cur[:1]) == {}


def test_emd_of_a_point_moved_by_one_cell_is_one_cell():
    a = torch.zeros(1, 8, 8)
    b = torch.zeros(1, 8, 8)
    a[0, 3, 2], b[0, 3, 3] = 1.0, 1.0
    assert emd(a, b).item() == pytest.approx(1 / 8, abs=0.01)
    assert com_shift(a, b).item() == pytest.approx(1 / 8, abs=1e-6)
    big_a = torch.nn.functional.interpolate(a[:, None], size=(64, 64), mode="nearest")[:, 0]
    big_b = torch.nn.functional.interpolate(b[:, None], size=(64, 64), mode="nearest")[:, 0]
    assert emd(big_a, big_b).item() == pytest.approx(1 / 8, abs=0.02)  # pooled to the grid, same answer
    assert math.isnan(emd(torch.zeros(1, 8, 8), b).item())


def test_topk_iou_and_com_shift_by_hand():
    a = torch.zeros(1, 10, 10)
    a[0, 0, :] = torch.arange(10.0) + 1  # top 10 % = the 10 pixels of row 0
    assert topk_iou(a, a).item() == 1.0
    b = torch.zeros(1, 10, 10)
    b[0, 9, :] = 1.0
    assert topk_iou(a, b.clone() + torch.rand(1, 10, 10) * 1e-3).item() == 0.0
    corner_a, corner_b = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    corner_a[0, 0, 0], corner_b[0, 0, 7] = 1.0, 1.0
    assert com_shift(corner_a, corner_b).item() == pytest.approx(7 / 8)


def test_border_mask_geometry():
    mask = border_mask(20, 20, 0.1)
    assert mask[:2].all() and mask[:, -2:].all() and not mask[2:-2, 2:-2].any()
    assert mask.float().mean().item() == pytest.approx(1 - (16 * 16) / 400)


def test_reports_have_the_documented_keys():
    maps = torch.rand(3, 16, 16)
    keys = set(focus_report(maps))
    assert keys == {"border_energy", "border_area", "border_lift", "spread"}
    masks = _square_mask(16, 4, 10, batch=3)
    keys = set(focus_report(maps, masks, masks))
    assert {"energy_in_object", "object_area", "lift", "mask_auc", "pointing_game", "energy_in_cue", "cue_lift"} <= keys
    drift = drift_report(maps, maps.flip(1), maps)
    metrics, versus = ("emd", "com_shift", "topk_iou", "spearman"), ("prev", "first", "chance")
    assert set(drift) == {f"{m}_{w}" for m in metrics for w in versus}
    assert torch.allclose(drift["spearman_first"], torch.ones(3))


def test_map_metrics_keeps_the_first_and_previous_maps():
    metrics = MapMetrics(max_side=8)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = torch.exp(-((ys - 8) ** 2 + (xs - 3) ** 2) / 8)  # a blob on the left
    first = torch.stack([blob, blob.T])
    out0 = metrics.update("gradcam", first)
    assert not any(k.endswith("_prev") for k in out0) and "drift/emd_chance" in out0
    out1 = metrics.update("gradcam", first)
    assert out1["drift/emd_prev"].max().item() < 1e-3
    out2 = metrics.update("gradcam", first.flip(1, 2))
    assert out2["drift/emd_first"].min().item() > 0.3  # the blob moved across the image
    assert metrics.first["gradcam"].shape == (2, 8, 8)
    restored = MapMetrics(max_side=8)
    restored.load_state_dict(metrics.state_dict())
    assert torch.equal(restored.previous["gradcam"], metrics.previous["gradcam"])
    assert summarize({"a": torch.tensor([1.0, float("nan"), 3.0, 2.0])})["a"] == 2.0


def test_emd_on_non_square_grids_and_extreme_masses():
    """Opposite corners (the largest cost), masses of 1e-20 beside 1, and 4x8 / 1x8 grids: no overflow, exact within
    0.004 (scipy's linear program)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)
    a[0, 0, 0], b[0, 7, 7] = 1.0, 1.0
    a[1] = torch.rand(8, 8, generator=g) * 1e-20
    a[1, 3, 3], b[1, 4, 4] = 1.0, 1.0
    cases = [(a, b), tuple(torch.rand(4, 4, 8, generator=g) ** 3 for _ in range(2))]
    cases.append(tuple(torch.rand(3, 1, 8, generator=g) for _ in range(2)))
    for x, y in cases:
        h, w = x.shape[-2:]
        pts = _grid_points(h, w)
        ours = emd(x, y)
        for i in range(x.shape[0]):
            pa, pb = (m[i].double().flatten().numpy() for m in (x, y))
            ref = scipy_stats.wasserstein_distance_nd(pts, pts, pa / pa.sum(), pb / pb.sum())
            assert ref - 0.004 <= ours[i].item() <= ref + 1e-5
    assert emd(a, b)[0].item() == pytest.approx(math.sqrt(2) * 7 / 8, abs=1e-4)
    assert torch.equal(emd(torch.rand(2, 1, 1), torch.rand(2, 1, 1)), torch.zeros(2))  # one cell: nothing moves
