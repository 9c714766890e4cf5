"""TCAV: the functional core against captum's TCAV and scipy, and TCAVCallback in a real Trainer run."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyCNN, loaders, read_event_images, require_module, trainer  # noqa: F401
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_explain import TCAVCallback
from lightning_explain.functional.tcav import (
    directional_derivatives,
    fit_cav,
    layer_activations,
    layer_gradients,
    t_test,
    tcav,
    tcav_score,
)

scipy_stats = require_module("scipy.stats")


def _cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    ).eval()


def _sets(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Noisy vertical stripes (the concept), plain noise (random sets), and class inputs."""
    g = torch.Generator().manual_seed(seed)
    stripes = (torch.arange(12) % 2).float().expand(20, 3, 12, 12)
    concept = 0.5 * stripes + 0.5 * torch.rand(20, 3, 12, 12, generator=g)
    randoms = [torch.rand(20, 3, 12, 12, generator=g) for _ in range(4)]
    inputs = torch.rand(16, 3, 12, 12, generator=g)
    return concept, inputs, randoms


@pytest.mark.parametrize(
    ("a", "b"),
    [([0.1, 0.5, 0.6], [0.2, 0.3, 0.25, 0.9]), ([1.0, 1.1], [3.0, 3.2, 3.1]), ([0.5, 0.55, 0.6] * 4, [0.4, 0.5] * 5)],
)
def test_t_test_matches_scipy(a, b):
    t, p = t_test(a, b)
    ref = scipy_stats.ttest_ind(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)


def test_t_test_degenerate_cases():
    assert t_test([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    t, p = t_test([1.0, 1.0], [0.0, 0.0])
    assert math.isinf(t) and p == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        t_test([1.0], [1.0, 2.0])


def test_fit_cav_separates_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    direction = torch.zeros(50)
    direction[7] = 1.0
    concept = torch.randn(30, 50, generator=g) + 2 * direction
    random = torch.randn(40, 50, generator=g)
    cav = fit_cav(concept, random)
    assert torch.equal(cav, fit_cav(concept, random))  # no randomness
    assert cav.norm() == pytest.approx(1.0, abs=1e-5)
    assert int(cav.abs().argmax()) == 7 and cav[7] > 0  # points to the concept
    assert ((concept @ cav).mean() > (random @ cav).mean()).item()
    md = fit_cav(concept, random, method="mean_difference")
    assert torch.allclose(md, (concept.mean(0) - random.mean(0)) / (concept.mean(0) - random.mean(0)).norm())


def test_gradients_and_activations_match_a_direct_hook():
    model = _cnn()
    x = torch.rand(5, 3, 12, 12)
    feats = {}
    handle = model[1].register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    out = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(out[:, 2].sum(), [feats["a"]])
    assert torch.allclose(layer_activations(model, x, "1", batch_size=2), feats["a"].flatten(1).detach(), atol=1e-6)
    assert torch.allclose(layer_gradients(model, x, "1", 2, batch_size=2), grad.flatten(1), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


class _FixedCAVClassifier:
    """A captum Classifier that fits OUR CAV on the activations captum hands it."""

    def __init__(self) -> None:
        self.cav: torch.Tensor | None = None
        self.labels: list[int] = []

    def train_and_eval(self, dataloader, **kwargs):
        xs, ys = zip(*dataloader, strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
        self.labels = sorted(set(y.tolist()))
        concept_label = self.labels[0]  # the concept gets the smaller id in these tests
        self.cav = fit_cav(x[y == concept_label].flatten(1), x[y != concept_label].flatten(1))
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        assert self.cav is not None
        return torch.stack([self.cav, -self.cav])

    def classes(self):
        return self.labels


def _captum_scores(tmp_path, model, concept, randoms, inputs, target, classifier=None):
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier

    if classifier is not None:
        Classifier.register(type(classifier))
    c = Concept(0, "concept", [concept])
    rs = [Concept(i + 1, f"random{i}", [r]) for i, r in enumerate(randoms)]
    tc = TCAV(model, layers=["1"], classifier=classifier, save_path=str(tmp_path / "cav"))
    out = tc.interpret(inputs, [[c, r] for r in rs], target=target)
    scores = [float(out[f"0-{r.id}"]["1"]["sign_count"][0]) for r in rs]
    cavs = [tc.cavs[f"0-{r.id}"]["1"].stats["weights"][0].float() for r in rs]
    return scores, cavs


def test_scores_equal_captum_with_the_same_cav(tmp_path):
    model = _cnn()
    concept, inputs, randoms = _sets()
    ours = tcav(model, "1", {0: inputs}, {"stripes": concept}, randoms)["stripes"]
    theirs, cavs = _captum_scores(tmp_path, model, concept, randoms[1:], inputs, 0, _FixedCAVClassifier())
    assert ours.scores[:, 0].tolist() == theirs  # exactly the same fractions
    assert len(set(theirs)) > 1 and 0 < min(theirs) < 1  # a non-trivial case: scores strictly between 0 and 1
    # and the CAV we fitted on captum's activations is the one we fit on ours
    acts = layer_activations(model, concept, "1")
    for cav, random in zip(cavs, randoms[1:], strict=True):
        mine = fit_cav(acts, layer_activations(model, random, "1"))
        assert torch.allclose(cav, mine, atol=1e-5)


def test_fitted_cavs_agree_with_captums_sgd_on_a_separable_concept(tmp_path):
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = _cnn()
    concept, inputs, randoms = _sets(1)
    ours = tcav(model, "1", {0: inputs}, {"stripes": concept}, randoms)["stripes"]
    theirs, cavs = _captum_scores(tmp_path, model, concept, randoms[1:], inputs, 0)
    acts = layer_activations(model, concept, "1")
    cos = [
        float(nn.functional.cosine_similarity(c, fit_cav(acts, layer_activations(model, r, "1")), dim=0))
        for c, r in zip(cavs, randoms[1:], strict=True)
    ]
    assert min(cos) > 0.8, cos
    assert abs(float(ours.mean[0]) - sum(theirs) / len(theirs)) <= 0.2, (ours.scores, theirs)


def test_tcav_detects_a_concept_the_model_uses():
    # The model's class 0 logit is the mean red intensity: "red" must score 1 for class 0, significantly,
    # while random-vs-random CAVs score around chance.
    class RedDetector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.randn(4, 3, 1, 1) * 0.1)
                self.conv.weight[0] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
                self.conv.bias.zero_()

        def forward(self, x):
            f = self.conv(x).mean((2, 3))
            return torch.stack([f[:, 0], -f[:, 0]], dim=1)

    model = RedDetector().eval()
    _, inputs, _ = _sets(2)
    g = torch.Generator().manual_seed(5)
    concept = 0.3 * torch.rand(20, 3, 12, 12, generator=g)
    concept[:, 0] += 0.7
    randoms = [torch.rand(20, 3, 12, 12, generator=g) for _ in range(6)]
    result = tcav(model, "conv", {0: inputs, 1: inputs}, {"red": concept}, randoms)["red"]
    assert result.mean.tolist() == [1.0, 0.0]
    assert result.significant().tolist() == [True, True]
    assert result.cav_accuracy.min() == 1.0
    grads = layer_gradients(model, inputs, "conv", 0)
    cav = fit_cav(layer_activations(model, concept, "conv"), layer_activations(model, randoms[1], "conv"))
    assert float(tcav_score(directional_derivatives(grads, cav))) == 1.0


def test_tcav_needs_three_random_sets():
    concept, inputs, randoms = _sets()
    with pytest.raises(ValueError, match="at least 3 random sets"):
        tcav(_cnn(), "1", {0: inputs}, {"c": concept}, randoms[:2])


RED = torch.zeros(12, 3, 16, 16)
RED[:, 0] = 1.0


def test_callback_logs_scores_pvalues_and_flags(tmp_path):
    cb = TCAVCallback(
        "features.3",
        concepts={"red": "test_tcav:RED"},
        classes=[0, 1],
        num_random=3,
        set_size=4,
        num_class_examples=24,
        cav_steps=50,
        class_names=["a", "b", "c"],
    )
    train, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=2)
    t.fit(TinyCNN(), train, val)
    metrics = t.callback_metrics
    for cls in ("a", "b"):
        base = f"explain/tcav/red/{cls}"
        assert 0.0 <= float(metrics[f"{base}/score"]) <= 1.0
        assert 0.0 <= float(metrics[f"{base}/p_value"]) <= 1.0
        assert float(metrics[f"{base}/significant"]) == float(float(metrics[f"{base}/p_value"]) < 0.05)
        assert f"{base}/random_score" in metrics
    assert "explain/tcav/red/cav_accuracy" in metrics
    assert cb.latest["red"].scores.shape == (3, 2)
    assert float(metrics["explain/tcav/red/a/score"]) == pytest.approx(float(cb.latest["red"].mean[0]))


def test_callback_logs_what_functional_tcav_gives_on_the_same_inputs(tmp_path):
    # The callback's inputs, rebuilt from its documented behaviour: class examples are the first
    # num_class_examples validation samples split by label; concept examples the first set_size ones; the random
    # pool is shuffled with a generator seeded with `seed` and cut into num_random + 1 sets of set_size.
    num_random, set_size, seed = 3, 4, 5
    pool = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    cb = TCAVCallback(
        "features.3",
        concepts={"red": RED},
        random_examples=pool,
        classes=[0, 1],
        num_random=num_random,
        set_size=set_size,
        num_class_examples=16,
        cav_steps=50,
        seed=seed,
    )
    train, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=1)
    model = TinyCNN()
    t.fit(model, train, val)
    model.eval()
    x, y = (v[:16] for v in val.dataset.tensors)
    shuffled = pool[torch.randperm(16, generator=torch.Generator().manual_seed(seed))]
    randoms = [shuffled[i * set_size : (i + 1) * set_size] for i in range(num_random + 1)]
    expected = tcav(model, "features.3", {k: x[y == k] for k in (0, 1)}, {"red": RED[:set_size]}, randoms, steps=50)
    red = expected["red"]
    logged = {k: float(v) for k, v in t.callback_metrics.items() if k.startswith("explain/tcav/red/")}
    assert logged["explain/tcav/red/cav_accuracy"] == pytest.approx(float(red.cav_accuracy.mean()), abs=1e-6)
    for j, k in enumerate((0, 1)):
        base = f"explain/tcav/red/{k}"
        assert logged[f"{base}/score"] == pytest.approx(float(red.mean[j]), abs=1e-6)
        assert logged[f"{base}/random_score"] == pytest.approx(float(red.random_scores[:, j].mean()), abs=1e-6)
        assert logged[f"{base}/p_value"] == pytest.approx(float(red.p_values[j]), rel=1e-5, abs=1e-12)
    # Not a constant: the random-vs-random scores of the two classes, or of the runs, are not all the same value.
    assert red.random_scores.unique().numel() > 1


def test_callback_arguments_fail_early():
    with pytest.raises(ValueError, match="num_random"):
        TCAVCallback("x", concepts={"a": RED}, num_random=1)
    with pytest.raises(ValueError, match="concepts"):
        TCAVCallback("x", concepts={})
    cb = TCAVCallback("features.3", concepts={"a": "no_such_module_xyz:thing"})
    with pytest.raises(ValueError, match="cannot import"):
        cb.setup(pl.Trainer(logger=False, enable_checkpointing=False), TinyCNN(), "fit")
