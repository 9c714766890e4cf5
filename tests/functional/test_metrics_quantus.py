"""The focus numbers against Quantus 0.6's localisation metrics on the same maps and masks, and the two fixes found
in that comparison: an empty mask gives NaN, and tied maxima count by their share inside the mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import require_module

from lightning_explain.functional.metrics import energy_in_mask, mask_auc, pointing_game

quantus = require_module("quantus")

KW = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}


@pytest.fixture(autouse=True)
def _trapz(monkeypatch):
    # Quantus 0.6's AUC calls np.trapz, removed in NumPy 2.4; np.trapezoid is the same function under its new name.
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def _batch(n: int = 5, size: int = 12) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(n, size, size, generator=g) ** 3
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        top, left = (torch.randint(0, size - 4, (2,), generator=g)).tolist()
        masks[i, top : top + 4 + i % 3, left : left + 5] = True
    arrays = {
        "x_batch": torch.rand(n, 1, size, size, generator=g).numpy(),
        "y_batch": np.zeros(n, dtype=int),
        "a_batch": maps.numpy()[:, None],
        "s_batch": masks.numpy()[:, None].astype(float),
    }
    return maps, masks, arrays


def test_energy_mask_auc_and_pointing_game_equal_quantus():
    maps, masks, arrays = _batch()
    assert energy_in_mask(maps, masks).numpy() == pytest.approx(
        np.asarray(quantus.RelevanceMassAccuracy(**KW)(model=None, **arrays)), abs=1e-7
    )
    assert mask_auc(maps, masks).numpy() == pytest.approx(np.asarray(quantus.AUC(**KW)(model=None, **arrays)), abs=1e-7)
    assert pointing_game(maps, masks).numpy() == pytest.approx(
        np.asarray(quantus.PointingGame(**KW)(model=None, **arrays), dtype=float)
    )


def test_empty_mask_is_nan_where_quantus_scores_a_hit():
    maps, masks, arrays = _batch(2)
    masks[1] = False
    arrays["s_batch"] = masks.numpy()[:, None].astype(float)
    assert math.isnan(energy_in_mask(maps, masks)[1].item())  # nothing to point at: undefined (was 0.0)
    assert math.isnan(pointing_game(maps, masks)[1].item())
    hit = quantus.PointingGame(**KW)(model=None, **arrays)[1]
    assert float(hit) == 1.0  # Quantus 0.6 scores an empty mask as a hit (a defect)


def test_tied_maxima_score_their_share_inside_the_mask_wherever_the_mask_lies():
    maps = torch.zeros(2, 4, 4)
    maps[:, 0, 0] = maps[:, 3, 3] = 1.0  # two tied peaks
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True  # the first peak in row-major order inside
    masks[1, 3, 3] = True  # the last one inside: the old rule (first arg-max) called this a miss
    assert pointing_game(maps, masks).tolist() == [0.5, 0.5]
    masks[:, 3, 3] = masks[:, 0, 0] = True
    assert pointing_game(maps, masks).tolist() == [1.0, 1.0]
    arrays = {"x_batch": torch.rand(2, 1, 4, 4).numpy(), "y_batch": np.zeros(2, dtype=int),
              "a_batch": maps.numpy()[:, None], "s_batch": np.zeros((2, 1, 4, 4))}  # fmt: skip
    arrays["s_batch"][0, 0, 0, 0] = 1.0
    arrays["s_batch"][1, 0, 3, 3] = 1.0
    assert list(quantus.PointingGame(**KW)(model=None, **arrays)) == [True, True]  # any tied maximum inside: a hit
