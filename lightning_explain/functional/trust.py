"""Can this map be trusted? Randomisation (sanity), robustness, complexity and faithfulness correlation of maps.

Pure tensor functions; no Lightning import. Maps are ``[B, H, W]`` (non-negative; any scale). Each function returns
one value per image ``[B]``; NaN marks "undefined", never a silent 0 or 1.

Randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): a map that does not change when the model
changes does not explain the model.
    :func:`model_randomisation` (MPRT): the similarity between each map and the map of the same model whose modules
    are re-initialised one by one from the output towards the input (cascading), at chosen points of the cascade.
    The trained model is never written: the re-initialised values are substituted for one pass with
    :func:`torch.func.functional_call`, drawn by each module's own ``reset_parameters()`` under a forked RNG
    seeded with ``seed`` (the global RNG state is put back, so training's random numbers do not move).
    :func:`random_logit`: the similarity between the map of the explained class and the map of a random other
    class (from a private :class:`torch.Generator`).
    Similarity (:func:`map_similarity`): Spearman rank correlation and SSIM of the min-max normalised maps. LOW is
    good (the map answers to the model / to the class). A map that is constant (randomising the head often makes
    Grad-CAM all zeros) has no rank order to agree with: its Spearman with a non-constant map is defined as 0
    (Quantus returns NaN); two constant maps give NaN.
Robustness (Yeh et al. 2019): :func:`sensitivity` gives max- and average-sensitivity, the largest / mean relative
    change ``||a(x + e) - a(x)|| / ||a(x)||`` (Frobenius norms) under uniform noise ``e ~ U(-radius, radius)``.
    LOW is good.
Complexity: :func:`sparseness` is the Gini index of ``|a|`` (Chalasani et al. 2020; 0 = uniform, towards 1 = one
    pixel; HIGH = concise). :func:`complexity` is the entropy of ``|a| / sum |a|`` (Bhatt et al. 2020; 0 = one
    pixel, ``log(H*W)`` = uniform; LOW = concise). NaN for an all-zero or non-finite map.
Faithfulness correlation (Bhatt et al. 2020): :func:`faithfulness_correlation`, the Pearson correlation over
    ``runs`` random pixel subsets between the map's sum over the subset and the drop of the explained logit when
    the subset is replaced by the baseline. HIGH is good; NaN where either series is constant.

Example:
    >>> import torch
    >>> maps = torch.zeros(2, 8, 8); maps[0, 2, 3] = 1.0; maps[1] = 1.0
    >>> [round(v, 3) for v in sparseness(maps).tolist()], [round(v, 3) for v in complexity(maps).tolist()]
    ([0.984, 0.0], [0.0, 4.159])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain.functional.maps import normalize_maps
from lightning_explain.functional.metrics import spearman
from lightning_explain.functional.targets import OutputTransform, logits_from_output
from lightning_explain.functional.transport import check_maps

__all__ = [
    "ExplainFn",
    "complexity",
    "faithfulness_correlation",
    "map_similarity",
    "model_randomisation",
    "random_logit",
    "randomisation_order",
    "randomised",
    "rank_similarity",
    "sensitivity",
    "sparseness",
    "ssim",
]

_NAN = float("nan")

#: ``(model, inputs [B, C, H, W], classes [B]) -> maps [B, H, W]``: one method's maps of ``model``.
ExplainFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------------------------ similarity


def ssim(maps_a: Tensor, maps_b: Tensor, *, win_size: int = 7) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) per image pair, as ``skimage.metrics.structural_similarity``.

    A ``win_size`` square uniform window (``1 x win_size`` for maps one row high, e.g. flattened ones), sample
    covariances, ``K1 = 0.01``, ``K2 = 0.03``, averaged over the positions where the window fits, with the data
    range of each pair (max - min over both maps, as Quantus passes it). NaN where the pair's range is 0 (both maps
    the same constant) or a map is not finite; a side shorter than ``win_size`` raises.

    Example:
        >>> a = torch.rand(2, 16, 16)
        >>> ssim(a, a).tolist()
        [1.0, 1.0]
    """
    a, b = check_maps(maps_a).double(), check_maps(maps_b).double()
    if a.shape != b.shape:
        raise ValueError(f"maps {list(a.shape)} and {list(b.shape)} must have the same shape.")
    height, width = a.shape[-2:]
    kernel = (1 if height == 1 else win_size, win_size)
    if height < kernel[0] or width < win_size:
        raise ValueError(f"ssim needs maps of at least {win_size} pixels a side; got {[height, width]}.")
    both = torch.cat([a.flatten(1), b.flatten(1)], dim=1)
    data_range = both.amax(dim=1) - both.amin(dim=1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    n = kernel[0] * kernel[1]
    cov_norm = n / (n - 1)

    def mean(x: Tensor) -> Tensor:
        return F.avg_pool2d(x[:, None], kernel, stride=1)[:, 0].flatten(1)

    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = c1[:, None], c2[:, None]
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    value = s.mean(dim=1).float()
    ok = (data_range > 0) & torch.isfinite(both).all(dim=1)
    return torch.where(ok, value, torch.full_like(value, _NAN))


def _constant(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    return (flat.amax(dim=1) - flat.amin(dim=1) <= 0) & torch.isfinite(flat).all(dim=1)


def rank_similarity(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation per image, with the constant-map rule of the randomisation tests.

    A constant map has no rank order: against a non-constant map the value is 0 (no agreement); two constant maps
    give NaN (nothing to compare). Otherwise :func:`~lightning_explain.functional.metrics.spearman` (scipy's
    ``spearmanr``).

    Example:
        >>> a = torch.arange(16.0).reshape(1, 4, 4)
        >>> rank_similarity(a, a).item(), rank_similarity(a, torch.zeros(1, 4, 4)).item()
        (1.0, 0.0)
    """
    rho = spearman(maps_a, maps_b)
    ca, cb = _constant(maps_a), _constant(maps_b)
    return torch.where(ca ^ cb, torch.zeros_like(rho), rho)


def map_similarity(maps_a: Tensor, maps_b: Tensor) -> dict[str, Tensor]:
    """``{"spearman": ..., "ssim": ...}`` of the min-max normalised maps (see :func:`rank_similarity`, :func:`ssim`)."""
    a, b = normalize_maps(check_maps(maps_a).float()), normalize_maps(check_maps(maps_b).float())
    return {"spearman": rank_similarity(a, b), "ssim": ssim(a, b)}


# ------------------------------------------------------------------------------------------------ randomisation


def randomisation_order(model: nn.Module) -> list[str]:
    """The modules MPRT re-initialises, top-down: every module with ``reset_parameters``, in reverse module order.

    Example:
        >>> randomisation_order(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)))
        ['3', '0']
    """
    names = [name for name, module in model.named_modules() if callable(getattr(module, "reset_parameters", None))]
    return names[::-1]


def _reinitialised(model: nn.Module, names: Sequence[str], seed: int) -> dict[str, Tensor]:
    """New values for the parameters and buffers (not recursing) of the modules ``names``, keyed by full name: each
    module's copy re-initialised by ``reset_parameters()`` after seeding the RNG with ``seed``, under a forked RNG."""
    values: dict[str, Tensor] = {}
    for name in names:
        module = model.get_submodule(name)
        devices = sorted({t.device.index or 0 for t in module.parameters(recurse=False) if t.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            clone = copy.deepcopy(module)
            torch.manual_seed(seed)
            clone.reset_parameters()  # type: ignore[operator]
        prefix = f"{name}." if name else ""
        for key, tensor in [*clone.named_parameters(recurse=False), *clone.named_buffers(recurse=False)]:
            values[prefix + key] = tensor.detach()
    return values


class _Substituted(nn.Module):
    """Calls ``model`` with some parameters and buffers replaced (:func:`torch.func.functional_call`)."""

    def __init__(self, model: nn.Module, values: dict[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        self.values = values

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.model, self.values, args, kwargs, strict=False)


@contextmanager
def randomised(model: nn.Module, names: Sequence[str], seed: int = 42) -> Iterator[nn.Module]:
    """A module that runs ``model`` with the modules ``names`` re-initialised; ``model`` itself is not written.

    The yielded module calls ``model`` through :func:`torch.func.functional_call` with the re-initialised values;
    hooks on ``model``'s submodules (a layer given as a module object) still fire. Each module's values come from
    its own ``reset_parameters()`` on a copy, after seeding the RNG with ``seed`` (every module with the same seed,
    as Quantus does), under :func:`torch.random.fork_rng`: the global RNG state is as before afterwards.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> before = model.weight.detach().clone()
        >>> with randomised(model, [""], seed=0) as random_model:
        ...     out = random_model(torch.ones(1, 3))
        >>> torch.equal(model.weight, before)
        True
    """
    yield _Substituted(model, _reinitialised(model, names, seed))


def _checkpoints(count: int, steps: int | None) -> list[int]:
    """How many modules are re-initialised at each point where MPRT measures: every one with None, else ``steps``
    points from the top module alone to all of them, evenly spaced."""
    if steps is None or steps >= count:
        return list(range(1, count + 1))
    if steps == 1:
        return [count]
    return sorted({round(1 + i * (count - 1) / (steps - 1)) for i in range(steps)})


def model_randomisation(
    explain_fn: ExplainFn,
    model: nn.Module,
    inputs: Tensor,
    classes: Tensor,
    maps: Tensor,
    *,
    steps: int | None = 2,
    seed: int = 42,
    order: Sequence[str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Model-parameter randomisation test (Adebayo et al. 2018), cascading from the output towards the input.

    Args:
        explain_fn: ``(model, inputs, classes) -> maps`` for one method (it is given the randomised model).
        model: the trained model (never written).
        inputs: ``[B, C, H, W]``.
        classes: ``[B]`` the class explained in ``maps`` (explained again on each randomised model).
        maps: ``[B, H, W]`` the method's maps on the trained model.
        steps: how many points of the cascade to measure: the top module alone, ..., every module, evenly spaced
            (2: after the head and after all); None: after every module (Quantus's MPRT).
        seed: each module is re-initialised after seeding the (forked) RNG with it.
        order: the modules to re-initialise, first to last (default :func:`randomisation_order`).

    Returns:
        ``{module name: {"spearman": [B], "ssim": [B]}}`` in cascade order; the key is the last module re-initialised
        at that point (see :func:`map_similarity`). LOW similarity is good.
    """
    names = list(randomisation_order(model) if order is None else order)
    if not names:
        raise ValueError(f"{type(model).__name__} has no module with reset_parameters() to randomise.")
    out: dict[str, dict[str, Tensor]] = {}
    for count in _checkpoints(len(names), steps):
        with randomised(model, names[:count], seed) as random_model:
            random_maps = explain_fn(random_model, inputs, classes)
        out[names[count - 1]] = map_similarity(maps, random_maps)
    return out


def random_logit(
    explain_fn: ExplainFn,
    model: nn.Module,
    inputs: Tensor,
    classes: Tensor,
    maps: Tensor,
    num_classes: int,
    *,
    seed: int = 42,
    others: Tensor | None = None,
) -> dict[str, Tensor]:
    """Random-logit test (Sixt et al. 2020, Quantus's ``RandomLogit``): the map of a random other class vs ``maps``.

    The other class is uniform over the ``num_classes - 1`` classes that are not ``classes[i]``, drawn from a
    private generator seeded with ``seed`` (or given as ``others`` ``[B]``). Returns ``{"spearman", "ssim"}``
    (:func:`map_similarity`), per image; LOW is good (the map depends on the class).
    """
    if num_classes < 2:
        raise ValueError(f"the random-logit test needs at least 2 classes; the model has {num_classes}.")
    if others is None:
        generator = torch.Generator().manual_seed(seed)
        draw = torch.randint(0, num_classes - 1, (len(classes),), generator=generator).to(classes.device)
        others = draw + (draw >= classes).long()
    return map_similarity(maps, explain_fn(model, inputs, others.to(classes.device)))


# ------------------------------------------------------------------------------------------------ robustness


def sensitivity(
    explain_fn: ExplainFn,
    model: nn.Module,
    inputs: Tensor,
    classes: Tensor,
    maps: Tensor,
    *,
    samples: int = 8,
    radius: float = 0.02,
    seed: int = 0,
    noise: Tensor | None = None,
) -> dict[str, Tensor]:
    """Max- and average-sensitivity (Yeh et al. 2019): ``||a(x + e) - a(x)|| / ||a(x)||`` over noisy copies.

    ``e ~ U(-radius, radius)`` per input value, ``samples`` draws from a private generator seeded with ``seed`` (or
    ``noise`` ``[samples, B, C, H, W]``); the maps of all noisy copies come from ONE ``explain_fn`` call. The map
    is compared as ``explain_fn`` returns it (the callback's maps are min-max normalised). Frobenius norms; NaN for
    an all-zero or non-finite map. Returns ``{"max_sensitivity": [B], "avg_sensitivity": [B]}``; LOW is good.
    """
    a = check_maps(maps).float().flatten(1)
    if noise is None:
        generator = torch.Generator().manual_seed(seed)
        noise = (torch.rand((samples, *inputs.shape), generator=generator) * 2 - 1) * radius
    noise = noise.to(device=inputs.device, dtype=inputs.dtype)
    count, batch = noise.shape[0], inputs.shape[0]
    noisy = (inputs[None] + noise).flatten(0, 1)
    perturbed = explain_fn(model, noisy, classes.repeat(count)).float().reshape(count, batch, -1)
    norm = a.norm(dim=1)
    ratio = (perturbed - a[None]).norm(dim=2) / norm.clamp_min(1e-30)  # [samples, B]
    ok = (norm > 0) & torch.isfinite(a).all(dim=1)
    nan = torch.full_like(norm, _NAN)
    return {
        "max_sensitivity": torch.where(ok, ratio.amax(dim=0), nan),
        "avg_sensitivity": torch.where(ok, ratio.mean(dim=0), nan),
    }


# ------------------------------------------------------------------------------------------------ complexity


def _magnitudes(maps: Tensor) -> tuple[Tensor, Tensor]:
    a = check_maps(maps).double().flatten(1).abs()
    total = a.sum(dim=1)
    return a, (total > 0) & torch.isfinite(a).all(dim=1)


def sparseness(maps: Tensor) -> Tensor:
    """Gini index of ``|a|`` per image (Chalasani et al. 2020): ``sum_k (2k - n - 1) a_(k) / (n sum a)``, ``a``
    sorted ascending. 0 for a uniform map, ``1 - 1/n`` for a single pixel; NaN for an all-zero or non-finite map.
    (Quantus adds 1e-7 to every value first: equal to about 1e-6 on maps in [0, 1].)"""
    a, ok = _magnitudes(maps)
    n = a.shape[1]
    ordered = a.sort(dim=1).values
    k = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    gini = ((2 * k - n - 1) * ordered).sum(dim=1) / (n * a.sum(dim=1).clamp_min(1e-300))
    return torch.where(ok, gini, torch.full_like(gini, _NAN)).float()


def complexity(maps: Tensor) -> Tensor:
    """Entropy (nats) of ``|a| / sum |a|`` per image (Bhatt et al. 2020): 0 for a single pixel, ``log(H W)`` for a
    uniform map; ``0 log 0 = 0``. NaN for an all-zero or non-finite map."""
    a, ok = _magnitudes(maps)
    p = a / a.sum(dim=1, keepdim=True).clamp_min(1e-300)
    entropy = 0.0 - torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(dim=1)  # no -0.0
    return torch.where(ok, entropy, torch.full_like(entropy, _NAN)).float()


# ------------------------------------------------------------------------------------------------ faithfulness


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.double(), b.double()
    da, db = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    denom = da.norm(dim=1) * db.norm(dim=1)
    r = (da * db).sum(dim=1) / denom.clamp_min(1e-300)
    return torch.where(denom > 0, r, torch.full_like(r, _NAN)).float()


def faithfulness_correlation(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    classes: Tensor,
    *,
    runs: int = 32,
    subset: int | float = 0.1,
    baseline: float | str = "black",
    seed: int = 0,
    subsets: Tensor | None = None,
    batch_size: int = 64,
    output_transform: OutputTransform = None,
) -> Tensor:
    """Faithfulness correlation (Bhatt et al. 2020) per image: Pearson over ``runs`` random pixel subsets between
    the map's sum over the subset and ``logit(x) - logit(x with the subset replaced)`` of the explained class.

    Args:
        model: the classifier, in eval mode (no gradients are taken).
        inputs: ``[B, C, H, W]``.
        maps: ``[B, H, W]`` at the input's size.
        classes: ``[B]`` the class explained.
        runs: how many random subsets.
        subset: pixels per subset: a count, or a fraction of ``H * W`` (float in (0, 1)).
        baseline: what removed pixels become: a number, or ``"black"`` (each image's minimum, as Quantus).
        seed: seeds the private generator that draws the subsets (without replacement, per image and run).
        subsets: ``[runs, B, k]`` pixel indices (row-major) instead of drawing them.
        batch_size: perturbed images per forward.
        output_transform: maps the model's output to ``[B, C]`` logits.

    Quantus removes subsets of *input values* (pixel x channel) and sums the map broadcast to the channels; with one
    channel the two definitions are the same. HIGH is good; NaN where the map's sums or the drops are constant.
    """
    m = check_maps(maps).float()
    batch, _, height, width = inputs.shape
    if tuple(m.shape) != (batch, height, width):
        raise ValueError(f"maps {list(m.shape)} must be [B, H, W] = {[batch, height, width]} (upsample them first).")
    n = height * width
    if subsets is None:
        k = int(subset) if isinstance(subset, int) else max(1, round(float(subset) * n))
        if not 1 <= k < n:
            raise ValueError(f"subset must select between 1 and {n - 1} pixels; got {subset!r} ({k} pixels).")
        generator = torch.Generator().manual_seed(seed)
        subsets = torch.rand((runs, batch, n), generator=generator).argsort(dim=2)[..., :k]
    subsets = subsets.to(inputs.device)
    runs = subsets.shape[0]
    fill = inputs.flatten(1).amin(dim=1) if baseline == "black" else None
    if fill is None and not isinstance(baseline, int | float):
        raise ValueError(f"baseline must be a number or 'black'; got {baseline!r}.")
    removed = torch.zeros(runs, batch, n, dtype=torch.bool, device=inputs.device).scatter_(2, subsets, True)
    sums = (m.flatten(1)[None] * removed).sum(dim=2).T  # [B, runs]
    value = fill[None, :, None, None, None] if fill is not None else torch.tensor(float(baseline))  # type: ignore[arg-type]
    mask = removed.view(runs, batch, 1, height, width)
    perturbed = torch.where(mask, value.to(inputs), inputs[None]).flatten(0, 1)
    rows = classes.to(inputs.device).repeat(runs)
    with torch.no_grad():
        original = logits_from_output(model(inputs), output_transform).float()
        score = original.gather(1, classes.to(inputs.device)[:, None])[:, 0]
        scores = [
            logits_from_output(model(chunk), output_transform).float().gather(1, r[:, None])[:, 0]
            for chunk, r in zip(perturbed.split(batch_size), rows.split(batch_size), strict=True)
        ]
    drops = score[None] - torch.cat(scores).view(runs, batch)
    return _pearson(sums, drops.T)
