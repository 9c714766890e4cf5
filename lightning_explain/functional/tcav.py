"""Concept sensitivity: TCAV (Kim et al. 2018, "Interpretability Beyond Feature Attribution"). No Lightning import.

A concept activation vector (CAV) is the normal of a linear classifier that separates a layer's activations of
concept examples from those of random examples. The TCAV score of a class is the fraction of the class's inputs
whose class logit increases along the CAV (positive directional derivative). Significance: CAVs of the concept
against several random sets are compared with CAVs of one random set against the others (random-vs-random), by
a two-sided two-sample t-test on the scores.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> randoms = [torch.rand(6, 3, 32, 32, generator=g) for _ in range(3)]
    >>> out = tcav(model, "layer3", {0: torch.rand(4, 3, 32, 32)}, {"bright": torch.ones(6, 3, 32, 32)}, randoms)
    >>> out["bright"].scores.shape  # [random runs, classes]
    torch.Size([2, 1])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_explain.capture import StopForward, record_layer, resolve_layer, stop_after
from lightning_explain.functional.context import as_model_input, check_inputs, grad_context
from lightning_explain.functional.hooked_pass import hooked_pass
from lightning_explain.functional.progress import task
from lightning_explain.functional.targets import OutputTransform, class_indices

__all__ = [
    "TCAVScores",
    "directional_derivatives",
    "fit_cav",
    "layer_activations",
    "layer_gradients",
    "t_test",
    "tcav",
    "tcav_score",
]

CavMethod = Literal["logistic", "mean_difference"]


def layer_activations(model: nn.Module, inputs: Tensor, layer: str | nn.Module, *, batch_size: int = 64) -> Tensor:
    """The layer's output for ``inputs``, flattened per sample: ``[N, D]`` fp32 (no-grad forwards in batches, each
    stopped right after the layer)."""
    inputs = check_inputs(inputs)
    name, module = resolve_layer(model, layer)
    chunks = []
    with grad_context(inputs.device), torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            with (
                record_layer(module, name, protect_from_inplace=True) as rec,
                stop_after(module, model),
                suppress(StopForward),
            ):
                model(as_model_input(inputs[start : start + batch_size], model))  # stops after the layer
            chunks.append(rec.last_tensor().detach().float().flatten(1))
    return torch.cat(chunks)


def layer_gradients(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module,
    targets: int | Tensor,
    *,
    output_transform: OutputTransform = None,
    batch_size: int = 64,
) -> Tensor:
    """d logit[target] / d (layer output), flattened per sample: ``[N, D]`` fp32.

    One hooked forward and one ``torch.autograd.grad`` per batch; ``param.grad`` is never touched.
    """
    inputs = check_inputs(inputs)
    resolved = resolve_layer(model, layer)
    classes = class_indices(targets, inputs.shape[0], inputs.device)
    chunks = []
    for start in range(0, inputs.shape[0], batch_size):
        grad = hooked_pass(
            model,
            inputs[start : start + batch_size],
            classes[start : start + batch_size],
            layers=[resolved],
            grad_layer=True,
            output_transform=output_transform,
        ).layer_grad
        assert grad is not None
        chunks.append(grad.float().flatten(1))
    return torch.cat(chunks)


def fit_cav(
    concept: Tensor,
    random: Tensor,
    *,
    method: CavMethod = "logistic",
    steps: int = 300,
    weight_decay: float = 1e-2,
) -> Tensor:
    """The concept activation vector: unit normal ``[D]`` of a linear boundary, pointing towards the concept.

    ``"logistic"``: L2-regularised logistic regression (concept = 1, random = 0, both sets weighted equally)
    fitted by ``steps`` of full-batch accelerated gradient descent with the step 1/L from the Lipschitz constant,
    on activations centred and scaled by one global factor (which leaves the direction unchanged). The weights are
    kept as a combination of the samples (they stay in that span), so a step costs O(n^2), not O(n D). Deterministic:
    no random initialisation, no mini-batches. ``"mean_difference"``: the normalised difference of the two means
    (closed form).

    Args:
        concept: activations of the concept examples ``[n1, D]``.
        random: activations of the random examples ``[n0, D]``.
        method: ``"logistic"`` or ``"mean_difference"``.
        steps: gradient steps for ``"logistic"``.
        weight_decay: L2 penalty on the weights (in the scaled space) for ``"logistic"``.
    """
    if concept.ndim != 2 or random.ndim != 2 or concept.shape[1] != random.shape[1]:
        raise ValueError(
            f"concept and random activations must be [n, D] with the same D; got {list(concept.shape)} and "
            f"{list(random.shape)}."
        )
    if concept.shape[0] < 1 or random.shape[0] < 1:
        raise ValueError("fit_cav needs at least one concept and one random example.")
    concept, random = concept.detach().float(), random.detach().float()
    if method == "mean_difference":
        return _unit(concept.mean(0) - random.mean(0))
    if method != "logistic":
        raise ValueError(f"method must be 'logistic' or 'mean_difference'; got {method!r}.")
    x = torch.cat([concept, random])
    y = torch.cat([torch.ones(concept.shape[0]), torch.zeros(random.shape[0])]).to(x.device)
    weight = torch.cat(
        [torch.full((concept.shape[0],), 0.5 / concept.shape[0]), torch.full((random.shape[0],), 0.5 / random.shape[0])]
    ).to(x.device)
    x = x - x.mean(0)
    x = x / x.std().clamp_min(1e-12)
    # The weights stay in the span of the samples (they start at 0 and every gradient is X^T r + lambda w), so
    # w = X^T alpha and each step needs only the n x n Gram matrix: O(n^2) per step instead of O(n D).
    gram = x @ x.T
    root = weight.sqrt()
    # Lipschitz constant of the weighted logistic loss: largest eigenvalue of W^1/2 (K + 1 1^T) W^1/2 / 4.
    lipschitz = float(torch.linalg.eigvalsh(root[:, None] * (gram + 1.0) * root[None, :])[-1]) / 4 + weight_decay
    step = 1.0 / lipschitz
    alpha = torch.zeros(x.shape[0], device=x.device)
    bias = torch.zeros((), device=x.device)
    alpha_prev, bias_prev, alpha_m, bias_m = alpha, bias, alpha, bias
    for k in range(1, steps + 1):
        residual = weight * (torch.sigmoid(gram @ alpha_m + bias_m) - y)
        alpha = alpha_m - step * (residual + weight_decay * alpha_m)
        bias = bias_m - step * residual.sum()
        beta = (k - 1) / (k + 2)
        alpha_m, bias_m = alpha + beta * (alpha - alpha_prev), bias + beta * (bias - bias_prev)
        alpha_prev, bias_prev = alpha, bias
    return _unit(x.T @ alpha)


def _unit(v: Tensor) -> Tensor:
    norm = v.norm()
    return v / norm if float(norm) > 0 else v


def directional_derivatives(gradients: Tensor, cavs: Tensor) -> Tensor:
    """``gradients`` ``[N, D]`` dotted with one CAV ``[D]`` (-> ``[N]``) or several ``[R, D]`` (-> ``[N, R]``)."""
    return gradients @ (cavs if cavs.ndim == 1 else cavs.T)


def tcav_score(derivatives: Tensor) -> Tensor:
    """Fraction of inputs with a positive directional derivative (along dim 0)."""
    return (derivatives > 0).float().mean(dim=0)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz), in plain floats."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def t_test(a: Sequence[float] | Tensor, b: Sequence[float] | Tensor) -> tuple[float, float]:
    """Two-sided two-sample Student t-test with pooled variance (``scipy.stats.ttest_ind``'s default).

    Returns ``(t, p)``. When both samples have zero variance, ``t`` is +-inf and ``p`` is 0 if the means differ,
    and ``t = 0, p = 1`` if they are equal (scipy gives NaN there).
    """
    xa = [float(v) for v in (a.tolist() if isinstance(a, Tensor) else a)]
    xb = [float(v) for v in (b.tolist() if isinstance(b, Tensor) else b)]
    n1, n2 = len(xa), len(xb)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"a t-test needs at least 2 values per sample; got {n1} and {n2}.")
    m1, m2 = sum(xa) / n1, sum(xb) / n2
    ss = sum((v - m1) ** 2 for v in xa) + sum((v - m2) ** 2 for v in xb)
    df = n1 + n2 - 2
    se = math.sqrt(ss / df * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return (0.0, 1.0) if m1 == m2 else (math.copysign(math.inf, m1 - m2), 0.0)
    t = (m1 - m2) / se
    return t, _betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass
class TCAVScores:
    """TCAV of one concept for several classes.

    Attributes:
        classes: the class indices, one per column.
        scores: TCAV score of each concept-vs-random CAV (rows) for each class (columns), ``[R, K]``.
        random_scores: the same for the random-vs-random CAVs, ``[R, K]``.
        p_values: two-sided t-test of ``scores`` against ``random_scores`` per class, ``[K]``.
        cav_accuracy: training accuracy of each concept-vs-random classifier, ``[R]``.
    """

    classes: list[int]
    scores: Tensor
    random_scores: Tensor
    p_values: Tensor
    cav_accuracy: Tensor

    @property
    def mean(self) -> Tensor:
        """The reported TCAV score per class: the mean over the concept-vs-random CAVs, ``[K]``."""
        return self.scores.mean(dim=0)

    def significant(self, alpha: float = 0.05) -> Tensor:
        """Whether the concept's scores differ from random ones at level ``alpha``, per class ``[K]``."""
        return self.p_values < alpha


def _accuracy(cav: Tensor, concept: Tensor, random: Tensor) -> float:
    proj_c, proj_r = concept @ cav, random @ cav
    threshold = (proj_c.mean() + proj_r.mean()) / 2
    hits = (proj_c > threshold).float().sum() + (proj_r <= threshold).float().sum()
    return float(hits) / (concept.shape[0] + random.shape[0])


def tcav(
    model: nn.Module,
    layer: str | nn.Module,
    class_inputs: Mapping[int, Tensor],
    concepts: Mapping[str, Tensor],
    random_sets: Sequence[Tensor],
    *,
    cav_method: CavMethod = "logistic",
    steps: int = 300,
    weight_decay: float = 1e-2,
    output_transform: OutputTransform = None,
    batch_size: int = 64,
) -> dict[str, TCAVScores]:
    """TCAV scores with the random-vs-random significance test, for each concept and class.

    CAVs: each concept against ``random_sets[1:]`` (one CAV per random set) and, for the null distribution,
    ``random_sets[0]`` against ``random_sets[1:]``. Gradients of each class logit at ``layer`` are computed once
    per class (one forward + one ``autograd.grad`` per batch) and shared by every CAV.

    Args:
        model: the classifier (its mode is left as it is; callers put it in eval mode).
        layer: the layer whose output the CAVs live in (dotted name or module).
        class_inputs: class index -> inputs of that class ``[n, C, H, W]``.
        concepts: concept name -> concept examples ``[n, C, H, W]``.
        random_sets: at least 3 sets of random examples ``[n, C, H, W]``.
        cav_method, steps, weight_decay: see :func:`fit_cav`.
        output_transform: maps the model's output to ``[B, C]`` logits.
        batch_size: images per forward.

    Returns:
        concept name -> :class:`TCAVScores`.
    """
    if len(random_sets) < 3:
        raise ValueError(
            f"tcav needs at least 3 random sets (one reference + 2 runs for the t-test); got {len(random_sets)}."
        )
    if not class_inputs or not concepts:
        raise ValueError("tcav needs at least one class and one concept.")
    classes = sorted(class_inputs)
    with task("tcav", total=len(random_sets) + len(classes) + len(concepts)) as bar:
        randoms = []
        for r in random_sets:
            randoms.append(layer_activations(model, r, layer, batch_size=batch_size))
            bar.update()
        grads = []
        for k in classes:
            grads.append(
                layer_gradients(
                    model, class_inputs[k], layer, k, output_transform=output_transform, batch_size=batch_size
                )
            )
            bar.update()
        concept_acts = {}
        for name, examples in concepts.items():
            concept_acts[name] = layer_activations(model, examples, layer, batch_size=batch_size)
            bar.update()

    def scores_of(cavs: Tensor) -> Tensor:  # [R, D] -> [R, K]
        return torch.stack([tcav_score(directional_derivatives(g, cavs)) for g in grads], dim=1)

    def cav(a: Tensor, b: Tensor) -> Tensor:
        return fit_cav(a, b, method=cav_method, steps=steps, weight_decay=weight_decay)

    null = torch.stack([cav(randoms[0], r) for r in randoms[1:]])
    random_scores = scores_of(null)
    out: dict[str, TCAVScores] = {}
    for name, acts in concept_acts.items():
        cavs = torch.stack([cav(acts, r) for r in randoms[1:]])
        scores = scores_of(cavs)
        p = [t_test(scores[:, j], random_scores[:, j])[1] for j in range(len(classes))]
        accuracy = torch.tensor([_accuracy(c, acts, r) for c, r in zip(cavs, randoms[1:], strict=True)])
        out[name] = TCAVScores(classes, scores, random_scores, torch.tensor(p), accuracy)
    return out
