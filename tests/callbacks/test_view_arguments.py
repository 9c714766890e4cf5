"""Every view hands each base argument it declares on to :class:`ViewCallback` (explicit keywords, no glue by name).

A view that declares ``colormap`` (say) but forgot to pass it on would silently draw with the default: here every
shared argument in a view's own signature is given a value different from its default and read back from the base.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

import lightning_explain.callbacks as callbacks
from lightning_explain.callbacks._view import ViewCallback


def _unpack(batch: Any) -> Any:
    return batch[0], batch[1]


def _logits(out: Any) -> Any:
    return out


#: A value other than every view's default, for each argument the base declares (``probe`` and friends below).
SHARED: dict[str, Any] = {
    "every_n_epochs": 7,
    "num_probe": 11,
    "probe_indices": [3, 1],
    "mean": [0.1, 0.2, 0.3],
    "std": [0.3, 0.2, 0.1],
    "colormap": "gray",
    "alpha": 0.25,
    "cell_size": 48,
    "class_names": ["x", "y"],
    "input_key": "img",
    "label_key": "lab",
    "unpack_batch": _unpack,
    "output_transform": _logits,
    "tag_prefix": "tp",
    "strict": True,
}
#: Arguments some views need.
REQUIRED: dict[str, dict[str, Any]] = {
    "ActivationMaximization": {"channels": {"features.0": [0]}},
    "FeatureInversion": {"layer": "features.3"},
    "TCAVCallback": {"layer": "features.3", "concepts": {"red": torch.zeros(4, 3, 8, 8)}},
}
#: Where a view sets the base's value itself (and why), instead of passing its own argument on.
DERIVED = {("TCAVCallback", "num_probe"), ("ActivationMaximization", "num_probe")}
#: Same name, not the base's argument: TCAVCallback's ``alpha`` is the deprecated name of ``significance``.
OTHER_MEANING = {("TCAVCallback", "alpha")}

VIEWS = [name for name in callbacks.__all__ if issubclass(getattr(callbacks, name), ViewCallback)]


def test_every_base_argument_is_declared_once():
    base = set(inspect.signature(ViewCallback.__init__).parameters) - {"self"}
    assert set(SHARED) | {"probe", "probe_labels", "probe_masks", "mask_keys"} == base


@pytest.mark.parametrize("name", VIEWS)
def test_each_shared_argument_a_view_declares_reaches_the_base(name):
    cls = getattr(callbacks, name)
    own = set(inspect.signature(cls.__init__).parameters)
    given = {k: v for k, v in SHARED.items() if k in own and (name, k) not in OTHER_MEANING}
    cb = cls(**REQUIRED.get(name, {}), **given)
    checked = []
    for key, value in given.items():
        if (name, key) in DERIVED:
            continue
        assert getattr(cb, key) == value, f"{name}({key}=...) did not reach the base view"
        checked.append(key)
    assert checked  # every view shares at least tag_prefix and strict
    if "probe" in own:
        probe = torch.rand(2, 3, 8, 8)
        labels = torch.tensor([1, 0])
        kwargs = {"probe_labels": labels} if "probe_labels" in own else {}
        cb = cls(**REQUIRED.get(name, {}), probe=probe, **kwargs)
        assert cb._probe is not None and torch.equal(cb._probe.images, probe)
        if kwargs:
            assert torch.equal(cb._probe.labels, labels)
