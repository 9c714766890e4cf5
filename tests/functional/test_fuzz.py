"""Fuzzing the public functional API (hypothesis): any input dtype, shape and NaN/inf content, any method names and
targets either give maps of the documented shape or raise TypeError / ValueError with a message; nothing else
escapes, and the model's flags and gradients are as they were."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_explain.functional import METHODS, explain

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64, torch.bool]
DOCUMENTED = (TypeError, ValueError)
#: One-pass methods (cheap) and a few names that are not methods.
CHEAP = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "saliency", "gradxinput", "activations"]
NAMES = st.lists(st.sampled_from([*CHEAP, "eigencam"]), min_size=1, max_size=3) | st.lists(
    st.sampled_from(["gradcam", "GradCAM", "", "rollout", "nope"]), max_size=2
)


class _ToFloat(nn.Module):
    """The model converts its own integer images (as the functional API allows for layer methods)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.is_floating_point() else x.float()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        _ToFloat(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


@st.composite
def inputs(draw: Any) -> torch.Tensor:
    """Mostly [B, 3, H, W] batches (B 0-3, H and W 1-12) of any dtype, sometimes any other rank or channel count;
    floats salted with NaN, inf and -inf."""
    if draw(st.integers(0, 4)):
        shape = [draw(st.integers(0, 3)), 3, draw(st.integers(1, 12)), draw(st.integers(1, 12))]
    else:
        shape = draw(st.lists(st.integers(0, 5), max_size=5))
    t = torch.rand(shape).to(draw(st.sampled_from(DTYPES)))
    if t.is_floating_point() and t.numel() and draw(st.booleans()):
        flat = t.view(-1)
        for i in draw(st.lists(st.integers(0, t.numel() - 1), max_size=3)):
            flat[i] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return t


TARGETS = st.one_of(st.none(), st.integers(-4, 4), st.lists(st.integers(-1, 3), max_size=4).map(torch.tensor))


def _state(model: nn.Module) -> list[Any]:
    return [
        [(m.training, id(m)) for m in model.modules()],
        [(p.requires_grad, p.grad) for p in model.parameters()],
        [b.clone() for b in model.buffers()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    ]


@SETTINGS
@given(x=inputs(), methods=NAMES, targets=TARGETS)
@example(x=torch.rand(0, 3, 8, 8), methods=["gradcam"], targets=None)  # an empty batch
@example(x=torch.full((2, 3, 8, 8), float("nan")), methods=["gradcam", "saliency"], targets=None)
@example(x=torch.rand(2, 3, 1, 1), methods=["gradcam", "activations"], targets=None)  # 1 x 1 images
@example(x=torch.rand(2, 3, 8, 8), methods=["gradcam"], targets=7)  # a class the model does not have
# Found by this test: an inf pixel made EigenCAM's SVD fail to converge (torch._C._LinAlgError); now a NaN map.
@example(
    x=torch.rand(1, 3, 3, 3).index_put_((torch.tensor(0),) * 3 + (torch.tensor(1),), torch.tensor(-math.inf)),
    methods=["eigencam"],
    targets=None,
)
def test_explain_gives_maps_or_raises_a_documented_error(model, x, methods, targets):
    before = _state(model)
    try:
        out = explain(model, x, "4", methods=methods, targets=targets)
    except Exception as err:
        assert isinstance(err, DOCUMENTED), f"{type(err).__name__}: {err}"
        assert len(str(err)) > 20, str(err)
    else:
        finite = torch.isfinite(x.float().flatten(1)).all(dim=1) if x.numel() else torch.ones(0, dtype=torch.bool)
        for name in out:
            m = out[name]
            assert m.dtype == torch.float32 and m.shape[0] == x.shape[0], name
            assert m.shape[-2:] == x.shape[-2:], name
            assert torch.isfinite(m[finite]).all(), name  # a NaN or inf image never spoils another's map
    after = _state(model)
    assert after[0] == before[0] and after[3] == before[3]
    assert all(rg == rg2 and g is None and g2 is None for (rg, g), (rg2, g2) in zip(before[1], after[1], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before[2], after[2], strict=True))  # BatchNorm stats untouched


def test_every_method_name_is_fuzzed_or_named():
    assert set(CHEAP) <= set(METHODS)
