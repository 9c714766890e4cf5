"""A mistyped method name gets the closest valid name, beside the list of every name."""

from __future__ import annotations

import pytest

from lightning_explain import ExplainCallback
from lightning_explain.functional import canonical_methods


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("grad-cam", "gradcam"), ("smooth_grad", "smoothgrad"), ("integrated-gradients", "integrated_gradients")],
)
def test_a_typo_suggests_the_closest_method(typo, meant):
    with pytest.raises(ValueError, match=rf"Did you mean '{meant}' for '{typo}'\?"):
        canonical_methods(["saliency", typo])


def test_the_callback_says_it_at_construction_and_nonsense_gets_no_guess():
    with pytest.raises(ValueError, match=r"Did you mean 'gradcam'"):
        ExplainCallback(methods=("grad-cam",))
    with pytest.raises(ValueError, match=r"non-empty subset of \['gradcam'") as info:
        canonical_methods(["xyzzy"])
    assert "Did you mean" not in str(info.value)
