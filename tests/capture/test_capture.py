"""The one-pass hooks: layer resolution, restoring hooks, modes and the RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from torch import nn

from lightning_explain.capture import preserve_model_state, preserve_rng, record_layer, resolve_layer


def test_resolve_layer_by_module_and_errors():
    model = TinyCNN()
    assert resolve_layer(model, model.features[3]) == ("features.3", model.features[3])
    with pytest.raises(ValueError, match="not part of the model"):
        resolve_layer(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match=r"'feature.3' does not exist.*'features.3'"):
        resolve_layer(model, "feature.3")


def test_hooks_and_modes_are_restored_when_the_pass_raises():
    model = TinyCNN().train()
    model.features[1].eval()
    with (
        pytest.raises(RuntimeError, match="inside"),
        preserve_model_state(model),
        record_layer(model.features[3], "features.3"),
    ):
        assert not model.training and len(model.features[3]._forward_hooks) == 1
        raise RuntimeError("inside")
    assert model.training and not model.features[1].training
    assert len(model.features[3]._forward_hooks) == 0


def test_preserve_rng_restores_after_draws():
    state = torch.get_rng_state()
    with preserve_rng():
        torch.rand(10)
        np.random.rand(3)
    assert torch.equal(torch.get_rng_state(), state)
