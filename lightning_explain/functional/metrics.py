"""Numbers from maps: is the model looking at the object, and did its attention move?

Pure tensor functions over batches of maps ``[B, H, W]`` (non-negative; any scale) and boolean masks
``[B, H, W]``. Each returns one value per image ``[B]``; NaN marks "undefined" (an all-zero map, an empty
mask), never a silent 0 or 1. No Lightning import.

Focus (Selvaraju et al. energy pointing game, Arras et al. relevance mass):
    ``energy_in_mask`` E = sum of the map inside the mask / total; a uniform map scores the mask's area r.
    ``lift`` (E - r) / (1 - r): 0 = no better than uniform, 1 = all energy inside, < 0 = background-heavy.
    ``mask_auc`` P(a_in > a_out) + 0.5 P(tie): 0.5 is chance whatever the object size.
    ``pointing_game`` 1 if the map's maximum lies in the (optionally dilated) mask, the share of tied maxima inside
    when several pixels share the maximum; NaN for constant maps and empty masks.

Without masks (how spread out the map is; a model that reads a textured background spreads its map over it):
    ``spread`` exp(entropy of the map normalised to sum 1) / N, the share of the image the map effectively covers:
    1 for a uniform map, k / N for a map uniform on k pixels, 1 / N for a single pixel. NaN for an all-zero map.

Drift between two maps of the same image:
    ``emd`` Wasserstein-1 distance between the maps normalised to sum 1, in units of the image side, on a grid of
    at most ``grid`` x ``grid`` cells (8 by default): stabilised Sinkhorn, bracketed by a feasible plan and a
    feasible dual (``emd_bounds``); the dual value, at most 0.004 below the exact one, is reported.
    ``com_shift`` distance between centres of mass, in units of the image side.
    ``topk_iou`` IoU of the top ``fraction`` of pixels of each map.
    ``spearman`` rank correlation of the pixel values (average ranks for ties).

Example:
    >>> import torch
    >>> maps = torch.ones(1, 4, 4)
    >>> mask = torch.zeros(1, 4, 4, dtype=torch.bool); mask[:, :2, :2] = True
    >>> energy_in_mask(maps, mask).item(), lift(maps, mask).item(), mask_auc(maps, mask).item()
    (0.25, 0.0, 0.5)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain.functional.transport import check_maps as _check
from lightning_explain.functional.transport import distributions, emd, emd_bounds, grid_points

__all__ = [
    "DRIFT_METRICS",
    "border_mask",
    "com_shift",
    "drift_report",
    "emd",
    "emd_bounds",
    "energy_in_mask",
    "focus_report",
    "lift",
    "mask_area",
    "mask_auc",
    "pointing_game",
    "spearman",
    "spread",
    "topk_iou",
]

_NAN = float("nan")


def _check_pair(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if masks.shape != maps.shape:
        raise ValueError(f"masks {list(masks.shape)} must match maps {list(maps.shape)} (resize the masks first).")
    return _check(maps), masks.bool()


def mask_area(masks: Tensor) -> Tensor:
    """r = |mask| / N per image."""
    return masks.flatten(1).float().mean(dim=1)


def energy_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of the map's total inside the mask; NaN for an all-zero map or an empty mask (nothing to point at,
    e.g. ``energy_in_cue`` on an image without a cue). Equals Quantus's ``RelevanceMassAccuracy`` on ``a >= 0``."""
    maps, masks = _check_pair(maps, masks)
    a = maps.clamp_min(0).flatten(1)
    total = a.sum(dim=1)
    inside = (a * masks.flatten(1)).sum(dim=1)
    ok = (total > 0) & masks.flatten(1).any(dim=1)
    return torch.where(ok, inside / total.clamp_min(1e-30), torch.full_like(total, _NAN))


def lift(maps: Tensor, masks: Tensor) -> Tensor:
    """(E - r) / (1 - r): 0 for a uniform map, 1 when all energy is inside, negative when outside-heavy.

    NaN for an all-zero map or a mask covering the whole image (or nothing).
    """
    e = energy_in_mask(maps, masks)
    r = mask_area(masks)
    ok = (r > 0) & (r < 1)
    return torch.where(ok, (e - r) / (1 - r).clamp_min(1e-12), torch.full_like(e, _NAN))


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks along the last dimension of ``[B, N]``, ties sharing their average rank (as scipy's rankdata)."""
    batch, n = values.shape
    ordered, order = values.sort(dim=1)
    position = torch.arange(n, device=values.device).expand(batch, n)
    starts = torch.ones_like(ordered, dtype=torch.bool)  # where a run of equal values starts
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values  # each value's run: first and last position
    last = torch.where(ends, position, n).flip(1).cummin(dim=1).values.flip(1)
    sorted_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def mask_auc(maps: Tensor, masks: Tensor) -> Tensor:
    """P(a_in > a_out) + 0.5 P(a_in = a_out) over pixel pairs (Mann-Whitney); NaN for empty/full masks."""
    maps, masks = _check_pair(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    n_in = inside.sum(dim=1).double()
    n_out = inside.shape[1] - n_in
    ranks = _average_ranks(torch.nan_to_num(flat))
    u = (ranks * inside).sum(dim=1) - n_in * (n_in + 1) / 2
    auc = (u / (n_in * n_out).clamp_min(1)).float()
    valid = (n_in > 0) & (n_out > 0) & torch.isfinite(flat).all(dim=1)
    return torch.where(valid, auc, torch.full_like(auc, _NAN))


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """The share of the map's maxima that lie in the mask dilated by ``tolerance`` pixels.

    With one maximum, 1.0 (a hit) or 0.0 (a miss). Ties: every pixel equal to the maximum counts, and the value is
    the fraction of them inside the mask (two tied peaks, one inside: 0.5), so the result does not depend on where
    the mask lies in row-major order. NaN for a constant or non-finite map and for an empty mask. (Quantus's
    ``PointingGame`` scores a hit if ANY tied maximum is inside, and an empty mask as a hit.)
    """
    maps, masks = _check_pair(maps, masks)
    empty = ~masks.flatten(1).any(dim=1)
    if tolerance > 0:
        k = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), k, stride=1, padding=tolerance)[:, 0] > 0
    flat = maps.flatten(1)
    peaks = flat == flat.amax(dim=1, keepdim=True)
    share = (peaks & masks.flatten(1)).sum(dim=1).float() / peaks.sum(dim=1).clamp_min(1).float()
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) <= 0
    bad = constant | ~torch.isfinite(flat).all(dim=1) | empty
    return torch.where(bad, torch.full_like(share, _NAN), share)


def border_mask(height: int, width: int, fraction: float = 0.1, device: torch.device | None = None) -> Tensor:
    """A ``[H, W]`` mask of the band of width ``fraction`` of the side along the image border."""
    bh, bw = max(1, round(height * fraction)), max(1, round(width * fraction))
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    return mask


def spread(maps: Tensor) -> Tensor:
    """The share of the image a map effectively covers: ``exp(H(p)) / N`` with ``p`` the map normalised to sum 1.

    The perplexity of the map over the image's ``N`` pixels: 1.0 for a uniform map (chance level: no place is
    preferred), ``k / N`` for a map spread evenly over ``k`` pixels, ``1 / N`` for a single pixel. Negative values
    are clamped to 0 first; NaN for an all-zero (or not finite) map. A model that reads a texture covering the
    background spreads its map over most of the image; one that reads an object concentrates it near the
    object's area.

    Example:
        >>> maps = torch.zeros(2, 4, 4); maps[0] = 1.0; maps[1, :2, :2] = 3.0
        >>> spread(maps).tolist()
        [1.0, 0.25]
    """
    a = _check(maps).clamp_min(0).flatten(1).double()
    total = a.sum(dim=1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    entropy = -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(dim=1)
    value = (entropy.exp() / a.shape[1]).float()
    ok = (total[:, 0] > 0) & torch.isfinite(a).all(dim=1)
    return torch.where(ok, value, torch.full_like(value, _NAN))


# ------------------------------------------------------------------------------------------------ drift


def _centres(maps: Tensor) -> tuple[Tensor, Tensor]:
    p, valid = distributions(maps)
    height, width = p.shape[-2:]
    pts = grid_points(height, width, p.device).float()
    flat = p.flatten(1)
    return flat @ pts, valid


def com_shift(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Distance between the maps' centres of mass, in units of the image side; NaN for all-zero maps."""
    ca, va = _centres(_check(maps_a))
    cb, vb = _centres(_check(maps_b))
    d = (ca - cb).norm(dim=1)
    return torch.where(va & vb, d, torch.full_like(d, _NAN))


def _top_mask(maps: Tensor, fraction: float) -> Tensor:
    flat = maps.flatten(1)
    k = max(1, math.ceil(fraction * flat.shape[1]))
    index = flat.topk(k, dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, index, True)


def topk_iou(maps_a: Tensor, maps_b: Tensor, fraction: float = 0.1) -> Tensor:
    """IoU of the top ``fraction`` pixels of each map; NaN where either map is constant or not finite."""
    return _top_iou(_tops(_check(maps_a).flatten(1), fraction), _tops(_check(maps_b).flatten(1), fraction))


def _tops(flat: Tensor, fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """The top-``fraction`` mask of each flattened map ``[B, N]``, and which maps have one (not constant, finite)."""
    usable = (flat.amax(1) > flat.amin(1)) & torch.isfinite(flat).all(1)
    return _top_mask(flat, fraction), usable


def _top_iou(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    (ma, usable_a), (mb, usable_b) = a, b
    iou = (ma & mb).sum(1).float() / (ma | mb).sum(1).float()
    return torch.where(usable_a & usable_b, iou, torch.full_like(iou, _NAN))


def spearman(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation of the pixel values per image; NaN where either map is constant."""
    a, b = _check(maps_a).flatten(1), _check(maps_b).flatten(1)
    return _rank_correlation(_ranks(a), _ranks(b))


def _ranks(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Centred average ranks ``[B, N]`` and whether each row is finite."""
    ranks = _average_ranks(torch.nan_to_num(flat))
    return ranks - ranks.mean(dim=1, keepdim=True), torch.isfinite(flat).all(dim=1)


def _rank_correlation(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    (ra, finite_a), (rb, finite_b) = a, b
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    rho = ((ra * rb).sum(dim=1) / denom.clamp_min(1e-300)).float()
    return torch.where((denom > 0) & finite_a & finite_b, rho, torch.full_like(rho, _NAN))


# ------------------------------------------------------------------------------------------ reports

#: Drift metrics by name, each ``(maps_a, maps_b) -> [B]``.
DRIFT_METRICS = {"emd": emd, "com_shift": com_shift, "topk_iou": topk_iou, "spearman": spearman}


def focus_report(
    maps: Tensor,
    object_masks: Tensor | None = None,
    cue_masks: Tensor | None = None,
    *,
    border_fraction: float = 0.1,
    grid: tuple[int, int] | None = None,
) -> dict[str, Tensor]:
    """Every focus metric per image ``[B]``, by name.

    With object masks: ``energy_in_object``, ``object_area``, ``lift``, ``mask_auc``, ``pointing_game``. With cue
    masks: ``energy_in_cue``, ``cue_area``, ``cue_lift``. Always (no masks needed): ``spread`` (the share of the
    image the map covers; high for a map spread over a background), ``border_energy``, ``border_area`` and
    ``border_lift`` (> 0: the border holds more than its share of the map, a sign of background focus). ``grid``:
    the cells the maps were upsampled from (a layer map's grid; None: the maps' own pixels). On a grid of at most 2
    x 2 cells every cell holds the same share of the border band, so ``border_lift`` cannot move (it is 0 for every
    map) and is NaN instead.

    Example:
        >>> maps = torch.rand(1, 2, 2).repeat_interleave(16, 1).repeat_interleave(16, 2)  # a 2 x 2 map at 32 px
        >>> focus_report(maps)["border_lift"].abs().item() < 1e-6, focus_report(maps, grid=(2, 2))["border_lift"]
        (True, tensor([nan]))
    """
    maps = _check(maps)
    out: dict[str, Tensor] = {}
    if object_masks is not None:
        out["energy_in_object"] = energy_in_mask(maps, object_masks)
        out["object_area"] = mask_area(object_masks)
        out["lift"] = lift(maps, object_masks)
        out["mask_auc"] = mask_auc(maps, object_masks)
        out["pointing_game"] = pointing_game(maps, object_masks)
    if cue_masks is not None:
        out["energy_in_cue"] = energy_in_mask(maps, cue_masks)
        out["cue_area"] = mask_area(cue_masks)
        out["cue_lift"] = lift(maps, cue_masks)
    out["spread"] = spread(maps)
    border = border_mask(maps.shape[-2], maps.shape[-1], border_fraction, maps.device).expand_as(maps)
    out["border_energy"] = energy_in_mask(maps, border)
    out["border_area"] = mask_area(border)
    lifted = lift(maps, border)
    cells = grid if grid is not None else (maps.shape[-2], maps.shape[-1])
    out["border_lift"] = torch.full_like(lifted, _NAN) if max(cells) <= 2 else lifted
    return out


def drift_report(current: Tensor, previous: Tensor | None = None, first: Tensor | None = None) -> dict[str, Tensor]:
    """Drift of ``current`` maps against the previous and the first epoch's, plus a chance level.

    Keys ``<metric>_prev`` and ``<metric>_first`` compare each image with itself; ``<metric>_chance`` compares
    image i with image i+1 of the same epoch (different images), so a reader knows what "large" means. Metrics:
    ``emd``, ``com_shift``, ``topk_iou``, ``spearman``. Needs at least two images for the chance level.
    """
    others = {"prev": previous, "first": first}
    if current.shape[0] > 1:
        others["chance"] = current.roll(1, dims=0)
    pairs = {k: v for k, v in others.items() if v is not None}
    if not pairs:
        return {}
    # One call per metric over every pair (prev, first, chance) stacked on the batch dimension.
    left = torch.cat([current] * len(pairs))
    right = torch.cat(list(pairs.values()))
    out: dict[str, Tensor] = {}
    for name, fn in DRIFT_METRICS.items():
        values = _stacked(name, current, pairs) if fn in (spearman, topk_iou) else fn(left, right)
        for key, part in zip(pairs, values.split(current.shape[0]), strict=True):
            out[f"{name}_{key}"] = part
    return out


def _stacked(metric: str, current: Tensor, pairs: dict[str, Tensor]) -> Tensor:
    """``spearman`` or ``topk_iou`` of ``current`` against each of ``pairs``, preparing every map once (ranks, top
    masks; the chance pairing is ``current`` rolled, and so are its ranks and masks)."""
    prepare, compare = (_ranks, _rank_correlation) if metric == "spearman" else (_tops, _top_iou)
    mine = prepare(_check(current).flatten(1))
    parts = []
    for key, other in pairs.items():
        chance = key == "chance"
        theirs = (mine[0].roll(1, dims=0), mine[1].roll(1, dims=0)) if chance else prepare(_check(other).flatten(1))
        parts.append(compare(mine, theirs))
    return torch.cat(parts)
