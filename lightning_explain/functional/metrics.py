"""Numbers from maps: is the model looking at the object, and did its attention move?

Pure tensor functions over batches of maps ``[B, H, W]`` (non-negative; any scale) and boolean masks
``[B, H, W]``. Each returns one value per image ``[B]``; NaN marks "undefined" (an all-zero map, an empty
mask), never a silent 0 or 1. No Lightning import.

Focus (Selvaraju et al. energy pointing game, Arras et al. relevance mass):
    ``energy_in_mask`` E = sum of the map inside the mask / total; a uniform map scores the mask's area r.
    ``lift`` (E - r) / (1 - r): 0 = no better than uniform, 1 = all energy inside, < 0 = background-heavy.
    ``mask_auc`` P(a_in > a_out) + 0.5 P(tie): 0.5 is chance whatever the object size.
    ``pointing_game`` 1 if the map's maximum lies in the (optionally dilated) mask; NaN for constant maps.

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

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

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
    "topk_iou",
]

_NAN = float("nan")


def _check(maps: Tensor) -> Tensor:
    if maps.ndim != 3:
        raise ValueError(f"maps must be [B, H, W], got shape {list(maps.shape)}.")
    return maps.float()


def _check_pair(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if masks.shape != maps.shape:
        raise ValueError(f"masks {list(masks.shape)} must match maps {list(maps.shape)} (resize the masks first).")
    return _check(maps), masks.bool()


def mask_area(masks: Tensor) -> Tensor:
    """r = |mask| / N per image."""
    return masks.flatten(1).float().mean(dim=1)


def energy_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of the map's total inside the mask; NaN for an all-zero map."""
    maps, masks = _check_pair(maps, masks)
    a = maps.clamp_min(0).flatten(1)
    total = a.sum(dim=1)
    inside = (a * masks.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, _NAN))


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
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1 + torch.arange(batch, device=values.device)[:, None] * n
    position = torch.arange(1, n + 1, device=values.device, dtype=torch.float64).expand(batch, n).reshape(-1)
    flat = group.reshape(-1)
    first = torch.full((batch * n,), float(n + 1), dtype=torch.float64, device=values.device)
    last = torch.zeros(batch * n, dtype=torch.float64, device=values.device)
    first = first.scatter_reduce(0, flat, position, reduce="amin")
    last = last.scatter_reduce(0, flat, position, reduce="amax")
    sorted_ranks = ((first + last) / 2)[flat].view(batch, n)
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
    """1.0 if the map's maximum lies in the mask dilated by ``tolerance`` pixels, else 0.0; NaN if constant."""
    maps, masks = _check_pair(maps, masks)
    if tolerance > 0:
        k = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), k, stride=1, padding=tolerance)[:, 0] > 0
    flat = maps.flatten(1)
    hit = masks.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True))[:, 0].float()
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) <= 0
    return torch.where(constant | ~torch.isfinite(flat).all(dim=1), torch.full_like(hit, _NAN), hit)


def border_mask(height: int, width: int, fraction: float = 0.1, device: torch.device | None = None) -> Tensor:
    """A ``[H, W]`` mask of the band of width ``fraction`` of the side along the image border."""
    bh, bw = max(1, round(height * fraction)), max(1, round(width * fraction))
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    return mask


# ------------------------------------------------------------------------------------------------ drift


def _distributions(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Maps normalised to sum 1, and which of them are valid (finite with a positive sum)."""
    a = maps.float().clamp_min(0)
    finite = torch.isfinite(a.flatten(1)).all(dim=1)
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0)
    total = a.flatten(1).sum(dim=1)
    valid = finite & (total > 0)
    return a / total.clamp_min(1e-30).view(-1, 1, 1), valid


def _grid_points(height: int, width: int, device: torch.device) -> Tensor:
    """Pixel centres in units of the image side (the longer side spans 1)."""
    side = max(height, width)
    ys = (torch.arange(height, device=device, dtype=torch.float64) + 0.5) / side
    xs = (torch.arange(width, device=device, dtype=torch.float64) + 0.5) / side
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


#: Masses below this share of a map are dropped before transport (they move the value by less than 1e-12 image
#: sides, and would otherwise slow every operation down with subnormal numbers).
_MASS_FLOOR = 1e-12


def _pool_to_grid(p: Tensor, grid: int) -> Tensor:
    """Distributions ``[B, H, W]`` summed into at most ``grid`` cells along the longer side (mass kept)."""
    height, width = p.shape[-2:]
    if max(height, width) <= grid:
        return p
    size = (
        (grid, max(1, round(grid * width / height)))
        if height >= width
        else (max(1, round(grid * height / width)), grid)
    )
    pooled = F.adaptive_avg_pool2d(p[:, None], size)[:, 0]
    return pooled / pooled.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1)


def _masses(p: Tensor) -> Tensor:
    a = p.flatten(1).double()
    a = torch.where(a < _MASS_FLOOR, torch.zeros_like(a), a)
    return a / a.sum(dim=1, keepdim=True).clamp_min(1e-300)


def emd_bounds(
    maps_a: Tensor, maps_b: Tensor, *, grid: int = 8, epsilon: float = 3e-3, iterations: int = 15
) -> tuple[Tensor, Tensor]:
    """Certified lower and upper bounds ``[B]`` of the Wasserstein-1 distance that :func:`emd` reports.

    The upper bound is the cost of a transport plan that meets both marginals exactly (Sinkhorn's plan, rounded onto
    the transport polytope as Altschuler et al. 2017 do); the lower bound is the dual value of Sinkhorn's potentials
    made feasible by two c-transforms. The exact distance lies between them. ``epsilon`` is the last entropic
    regularisation (at least 2e-3: float64 holds the kernel down to about that), ``iterations`` the Sinkhorn
    iterations at each of the halving steps to it. NaN where either map is all zero or not finite.
    """
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps must have the same shape, got {list(maps_a.shape)} and {list(maps_b.shape)}.")
    _check(maps_a)
    if not 2e-3 <= epsilon < 1:
        raise ValueError(f"epsilon must lie in [2e-3, 1): float64 cannot hold a finer kernel; got {epsilon}.")
    p, valid_p = _distributions(maps_a)
    q, valid_q = _distributions(maps_b)
    p, q = _pool_to_grid(p, grid), _pool_to_grid(q, grid)
    height, width = p.shape[-2:]
    cost, stages = _kernels(height, width, float(epsilon), p.device)
    a, b = _masses(p), _masses(q)
    lower, upper = _sinkhorn_bounds(a, b, cost, stages, iterations)
    valid = valid_p & valid_q
    nan = torch.full_like(upper, _NAN)
    return torch.where(valid, lower, nan).float(), torch.where(valid, upper, nan).float()


@functools.lru_cache(maxsize=16)
def _kernels(
    height: int, width: int, epsilon: float, device: torch.device
) -> tuple[Tensor, list[tuple[float, Tensor]]]:
    """The cost matrix of a grid and Sinkhorn's kernels ``exp(-cost / eps)``, eps halving from 1/8 of the grid's
    diagonal down to ``epsilon``."""
    points = _grid_points(height, width, device)
    cost = torch.cdist(points, points)  # [N, N], float64
    eps, stages = float(cost.max().item()) / 4, []  # from about one cell of blur (1/8 of the diagonal) down
    while eps > epsilon:
        eps = max(eps / 2, epsilon)
        # float64: at eps = 3e-3 on a unit grid the smallest entry is exp(-cost/eps) ~ 1e-180, still normal.
        stages.append((eps, torch.exp(-cost / eps)))
    return cost, stages


def _balanced(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(u c, v / c)`` describe the same plan: pick ``c`` so that neither scaling drifts towards overflow."""
    c = (v.amax(dim=1, keepdim=True) / u.amax(dim=1, keepdim=True).clamp_min(1e-300)).sqrt()
    return u * c, v / c.clamp_min(1e-300)


def _sinkhorn_bounds(
    a: Tensor, b: Tensor, cost: Tensor, stages: list[tuple[float, Tensor]], iterations: int
) -> tuple[Tensor, Tensor]:
    """Sinkhorn with epsilon scaling in float64 (one kernel shared by the batch; scalings carried from each eps to the
    next as ``u ** (eps_old / eps_new)``), then a feasible plan's cost (upper) and a feasible dual's value (lower)."""
    tiny = 1e-300
    u, v = torch.ones_like(a), torch.ones_like(b)
    previous, kernel, eps = None, stages[-1][1], stages[-1][0]
    for eps, kernel in stages:
        if previous is not None:
            u, v = _balanced(u, v)
            u, v = u ** (previous / eps), v ** (previous / eps)
        kernel_t = kernel.T.contiguous()
        for i in range(iterations):
            u = a / (v @ kernel_t).clamp_min(tiny)
            v = b / (u @ kernel).clamp_min(tiny)
            if i % 5 == 4:
                u, v = _balanced(u, v)
        previous = eps
    plan = u[:, :, None] * kernel * v[:, None, :]
    plan = plan * (a / plan.sum(dim=2).clamp_min(tiny)).clamp(max=1.0)[:, :, None]
    plan = plan * (b / plan.sum(dim=1).clamp_min(tiny)).clamp(max=1.0)[:, None, :]
    short_a, short_b = (a - plan.sum(dim=2)).clamp_min(0), (b - plan.sum(dim=1)).clamp_min(0)  # >= 0 but rounding
    plan = plan + short_a[:, :, None] * short_b[:, None, :] / short_a.sum(dim=1).clamp_min(tiny)[:, None, None]
    upper = (plan * cost).sum(dim=(1, 2))
    f = eps * torch.log(u.clamp_min(tiny))
    g = (cost - f[:, :, None]).amin(dim=1)  # c-transforms: f_i + g_j <= cost_ij holds afterwards
    f = (cost - g[:, None, :]).amin(dim=2)
    lower = (f * a).sum(dim=1) + (g * b).sum(dim=1)
    return torch.minimum(lower, upper), upper


def emd(maps_a: Tensor, maps_b: Tensor, *, grid: int = 8, epsilon: float = 3e-3, iterations: int = 15) -> Tensor:
    """Wasserstein-1 distance between maps normalised to sum 1, in units of the image side.

    Maps larger than ``grid`` x ``grid`` are first summed into that many cells (area pooling keeps the mass). The
    value is the lower bound of :func:`emd_bounds`: the dual value of a feasible potential, so never above the exact
    distance; against scipy's exact linear program the tests measure it at most 0.004 image sides below (a one-cell
    move on the 8 x 8 grid is 0.125). NaN where either map is all zero or not finite.
    """
    return emd_bounds(maps_a, maps_b, grid=grid, epsilon=epsilon, iterations=iterations)[0]


def _centres(maps: Tensor) -> tuple[Tensor, Tensor]:
    p, valid = _distributions(maps)
    height, width = p.shape[-2:]
    pts = _grid_points(height, width, p.device).float()
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
    a, b = _check(maps_a), _check(maps_b)
    ma, mb = _top_mask(a, fraction), _top_mask(b, fraction)
    iou = (ma & mb).sum(1).float() / (ma | mb).sum(1).float()
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    bad = (flat_a.amax(1) <= flat_a.amin(1)) | (flat_b.amax(1) <= flat_b.amin(1))
    bad |= ~torch.isfinite(flat_a).all(1) | ~torch.isfinite(flat_b).all(1)
    return torch.where(bad, torch.full_like(iou, _NAN), iou)


def spearman(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation of the pixel values per image; NaN where either map is constant."""
    a, b = _check(maps_a).flatten(1), _check(maps_b).flatten(1)
    ra, rb = _average_ranks(torch.nan_to_num(a)), _average_ranks(torch.nan_to_num(b))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    rho = ((ra * rb).sum(dim=1) / denom.clamp_min(1e-300)).float()
    valid = (denom > 0) & torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
    return torch.where(valid, rho, torch.full_like(rho, _NAN))


# ------------------------------------------------------------------------------------------ reports

#: Drift metrics by name, each ``(maps_a, maps_b) -> [B]``.
DRIFT_METRICS = {"emd": emd, "com_shift": com_shift, "topk_iou": topk_iou, "spearman": spearman}


def focus_report(
    maps: Tensor,
    object_masks: Tensor | None = None,
    cue_masks: Tensor | None = None,
    *,
    border_fraction: float = 0.1,
) -> dict[str, Tensor]:
    """Every focus metric per image ``[B]``, by name.

    With object masks: ``energy_in_object``, ``object_area``, ``lift``, ``mask_auc``, ``pointing_game``. With
    cue masks: ``energy_in_cue``, ``cue_area``, ``cue_lift``. Always (the no-mask heuristic):
    ``border_energy``, ``border_area`` and ``border_lift`` (> 0: the border holds more than its share of the
    map, a sign of background focus).
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
    border = border_mask(maps.shape[-2], maps.shape[-1], border_fraction, maps.device).expand_as(maps)
    out["border_energy"] = energy_in_mask(maps, border)
    out["border_area"] = mask_area(border)
    out["border_lift"] = lift(maps, border)
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
        for key, values in zip(pairs, fn(left, right).split(current.shape[0]), strict=True):
            out[f"{name}_{key}"] = values
    return out
