"""One word, one meaning: the renamed callback arguments, and their old names for one release.

``layer`` (was ``target_layer``), ``top_k_channels`` (ExplainCallback's ``top_k``), ``num_confused``
(ErrorAttribution's ``top_k``) and ``significance`` (TCAVCallback's ``alpha``). An old name warns (a
``DeprecationWarning``, pointing at the caller's line) and still works; the old and the new name together fail.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from conftest import TinyCNN, grid_cells, loaders, read_event_images, trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_explain import ErrorAttribution, ExplainCallback, TCAVCallback

CONCEPTS = {"red": torch.zeros(4, 3, 16, 16)}

#: callback, the old name and a value, the new name (also the attribute that holds the value).
RENAMES: list[tuple[type, str, Any, str]] = [
    (ExplainCallback, "target_layer", "features.3", "layer"),
    (ExplainCallback, "top_k", 5, "top_k_channels"),
    (ErrorAttribution, "target_layer", "features.3", "layer"),
    (ErrorAttribution, "top_k", 2, "num_confused"),
    (TCAVCallback, "alpha", 0.01, "significance"),
]
#: A different value of the new name, for "both given".
OTHER = {"layer": "features.4", "top_k_channels": 7, "num_confused": 9, "significance": 0.2}


def _make(cls: type, **kwargs: Any) -> Any:
    if cls is TCAVCallback:
        return cls("features.3", CONCEPTS, **kwargs)
    return cls(**kwargs)


@pytest.mark.parametrize(("cls", "old", "value", "new"), RENAMES, ids=[f"{c.__name__}-{o}" for c, o, _, _ in RENAMES])
def test_old_name_warns_and_sets_the_new_argument(cls, old, value, new):
    with pytest.warns(DeprecationWarning, match=f"{cls.__name__}\\({old}=...\\) was renamed to {new}=") as record:
        cb = _make(cls, **{old: value})
    assert getattr(cb, new) == value
    assert record[0].filename == __file__  # the warning points at the line that used the old name


@pytest.mark.parametrize(("cls", "old", "value", "new"), RENAMES, ids=[f"{c.__name__}-{o}" for c, o, _, _ in RENAMES])
def test_new_name_works_without_a_warning(cls, old, value, new):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        cb = _make(cls, **{new: value})
    assert getattr(cb, new) == value


@pytest.mark.parametrize(("cls", "old", "value", "new"), RENAMES, ids=[f"{c.__name__}-{o}" for c, o, _, _ in RENAMES])
def test_old_and_new_name_together_fail(cls, old, value, new):
    with pytest.raises(ValueError, match=f"got both {old}=.* and {new}=.*: pass {new} only"):
        _make(cls, **{old: value, new: OTHER[new]})


def test_a_bad_value_under_the_old_name_is_reported_under_that_name():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        ExplainCallback(top_k=0)
    with pytest.raises(ValueError, match="top_k_channels must be an integer >= 1"):
        ExplainCallback(top_k_channels=0)
    with pytest.raises(ValueError, match="num_confused must be an integer >= 0"):
        ErrorAttribution(num_confused=-1)
    with pytest.raises(ValueError, match="significance must lie in"):
        TCAVCallback("features.3", CONCEPTS, significance=1.5)


def test_explain_callback_with_the_old_names_draws_what_they_ask_for(tmp_path):
    # The old names reach the run: the activations grid shows top_k=2 channels of target_layer="features.3".
    with pytest.warns(DeprecationWarning):
        cb = ExplainCallback(target_layer="features.3", top_k=2, methods=("activations",), num_probe=2, cell_size=32)
    train, val = loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=1)
    t.fit(TinyCNN(), train, val)
    assert cb.layer_choice is not None and cb.layer_choice.name == "features.3"
    grid = read_event_images(t.logger.log_dir)["explain/activations"][-1][1]
    assert len(grid_cells(grid, (2, 3, 16, 16), 32, 2)) == 2  # input + 2 channel columns, one row per image
    with pytest.raises(AssertionError, match="columns"):
        grid_cells(grid, (2, 3, 16, 16), 32, 3)
