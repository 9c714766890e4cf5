"""``spread``, the mask-free focus number: exp(entropy) / N of the map, against direct computations."""

from __future__ import annotations

import math

import torch

from lightning_explain.functional.metrics import focus_report, spread


def test_spread_of_uniform_single_pixel_and_k_pixel_maps() -> None:
    maps = torch.zeros(4, 5, 6)
    maps[0] = 2.0  # uniform: 1
    maps[1, 2, 3] = 7.0  # one pixel: 1 / N
    maps[2, :2, :3] = 0.5  # six equal pixels: 6 / N
    values = spread(maps)
    torch.testing.assert_close(values[:3], torch.tensor([1.0, 1 / 30, 6 / 30]))
    assert math.isnan(values[3].item())  # all-zero map: undefined


def test_spread_matches_the_entropy_formula_and_ignores_scale_and_negative_values() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 7, 9, generator=generator) - 0.2
    p = maps.clamp_min(0).flatten(1) / maps.clamp_min(0).flatten(1).sum(1, keepdim=True)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    torch.testing.assert_close(spread(maps), entropy.exp() / 63)
    torch.testing.assert_close(spread(maps * 5.0), spread(maps))


def test_spread_is_in_the_focus_report_without_masks() -> None:
    maps = torch.rand(2, 8, 8)
    report = focus_report(maps)
    assert "spread" in report and "lift" not in report
    torch.testing.assert_close(report["spread"], spread(maps))
