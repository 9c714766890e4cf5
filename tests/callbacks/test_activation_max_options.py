"""Activation maximisation's ``jitter`` and ``l2_weight`` change the synthesised image as they should, and the
ActivationMaximization view logs exactly the synthesised pixels (read back from the TensorBoard event file)."""

from __future__ import annotations

import torch
from conftest import TinyCNN, assert_cells_equal, grid_cells, loaders, read_event_images, rendered_cells, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_explain import ActivationMaximization
from lightning_explain.functional import maximize_activation

SIZE, SPOT = 16, (8, 8)
#: Pixel parametrisation, no TV: each pixel moves by its own gradient only, so what moves is where the target reads.
PLAIN = {"classes": [0], "input_shape": (3, SIZE, SIZE), "fourier": False, "tv_weight": 0.0, "steps": 24, "lr": 0.1}


def _spot_model() -> nn.Module:
    """Class 0's logit is the sum of the three channels of one pixel (SPOT); class 1's is zero."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2, bias=False))
    with torch.no_grad():
        weight = torch.zeros(2, 3, SIZE, SIZE)
        weight[0, :, SPOT[0], SPOT[1]] = 1.0
        model[1].weight.copy_(weight.flatten(1))
    return model.eval()


def _moved(a: torch.Tensor, b: torch.Tensor) -> set[tuple[int, int]]:
    """The pixels (row, column) where two ``[1, 3, H, W]`` images differ."""
    return {(int(r), int(c)) for r, c in ((a - b).abs().amax(dim=(0, 1)) > 1e-6).nonzero()}


def test_jitter_spreads_the_optimisation_over_the_shifted_positions_and_no_further():
    model = _spot_model()
    still = maximize_activation(model, jitter=0, **PLAIN).pixels
    jittered = maximize_activation(model, jitter=2, **PLAIN).pixels
    idle = maximize_activation(model, jitter=0, **{**PLAIN, "classes": [1]}).pixels  # class 1 reads nothing
    assert _moved(still, idle) == {SPOT}  # without jitter only the pixel the logit reads is optimised
    moved = _moved(jittered, idle)
    window = {(SPOT[0] + dr, SPOT[1] + dc) for dr in range(-2, 3) for dc in range(-2, 3)}
    assert len(moved) > 3 and moved <= window  # rolled by up to 2 pixels each step: the 5 x 5 around the spot


def test_l2_weight_pulls_the_pixels_to_mid_grey():
    """The logit pushes the spot up (d/dp = 1 per channel); the penalty's gradient there is
    ``l2_weight * 2 (p - 0.5) / (3 H W)``: with 2000 it balances the push near p = 0.7."""
    model = _spot_model()
    options = {**PLAIN, "jitter": 0, "steps": 40}
    free = maximize_activation(model, l2_weight=0.0, **options).pixels[0, :, SPOT[0], SPOT[1]]
    pulled = maximize_activation(model, l2_weight=2000.0, **options).pixels[0, :, SPOT[0], SPOT[1]]
    assert (free > 0.9).all() and (pulled < 0.8).all(), (free, pulled)


def test_the_view_logs_the_synthesised_pixels_of_its_options(tmp_path):
    options = {"steps": 3, "lr": 0.2, "jitter": 1, "tv_weight": 0.1, "l2_weight": 0.5, "seed": 4}
    cb = ActivationMaximization({"features.3": [0, 2]}, every_n_epochs=1, columns=1, cell_size=32, **options)
    model = TinyCNN()
    train, val = loaders()
    run = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[cb], max_epochs=1)
    run.fit(model, train, val)
    grid = read_event_images(run.logger.log_dir)["explain/activation_max/features.3"][-1][1]
    out = cb.latest["explain/activation_max/features.3"]
    expected = maximize_activation(
        model.eval(), "features.3", [0, 2], input_shape=(3, 16, 16), **options, mean=None, std=None
    )
    torch.testing.assert_close(out.pixels, expected.pixels)  # the view's options reach the synthesis
    cells = grid_cells(grid, out.pixels.shape, 32, 0)  # one column: a cell per channel, row-major
    assert_cells_equal(cells, rendered_cells(out.pixels, 32), 0, "activation_max cell")
    # The comparison can fail: without the l2 penalty the pixels are others.
    other = maximize_activation(model, "features.3", [0, 2], input_shape=(3, 16, 16), **{**options, "l2_weight": 0.0})
    assert not torch.allclose(other.pixels, out.pixels)
