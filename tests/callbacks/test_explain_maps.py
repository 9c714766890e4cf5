"""ExplainCallback's pictures against the maps they claim to show, and each display / logging option in a real run.

Every logged grid is read back from the TensorBoard event file; its cells are compared, pixel for pixel, with the
public functional maps (``functional.grad_cam``, ``channel_activations``, ``saliency``, the ViT functions) of the
same probe, layer and targets, rendered with the public render functions (``render.overlay``, ``compose_grid``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    TinyCNN,
    assert_overlay_cells,
    grid_cells,
    loaders,
    make_dataset,
    probe_rows_match,
    read_event_images,
    read_event_scalars,
    trainer,
)
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback
from lightning_explain.functional import channel_activations, grad_cam, saliency
from lightning_explain.output.render import to_display

CELL = 32  # 16 px images enlarged 2x
LAYER = "features.3"
VAL = make_dataset(24, seed=2)  # what conftest.loaders() validates on
PROBE = VAL.tensors[0]


def _fit(tmp_path: Path, callback: ExplainCallback, model: Any = None, **kwargs: Any):
    """One-epoch fit; returns the trainer, the trained model in eval mode and the logged images."""
    model = model or TinyCNN()
    train, val = kwargs.pop("loaders", None) or loaders()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[callback], **kwargs)
    t.fit(model, train, val)
    return t, model.eval(), read_event_images(t.logger.log_dir)


def _last(images: dict, tag: str):
    return images[tag][-1][1]


def test_gradcam_saliency_and_top_k_activation_cells_are_the_functional_maps(tmp_path):
    cb = ExplainCallback(
        LAYER, num_probe=3, top_k_channels=4, cell_size=CELL, colormap="viridis", alpha=0.6, strict=True
    )
    _, model, images = _fit(tmp_path, cb, max_epochs=2)
    probe = PROBE[:3]
    display = to_display(probe)
    style = {"cell_size": CELL, "alpha": 0.6, "colormap": "viridis"}
    probe_rows_match(_last(images, "explain/gradcam"), probe, CELL)

    cams = grad_cam(model, probe, LAYER)
    assert_overlay_cells(_last(images, "explain/gradcam"), display, cams, **style, what="gradcam")
    assert_overlay_cells(_last(images, "explain/saliency"), display, saliency(model, probe), **style, what="saliency")
    maps, channels = channel_activations(model, probe, LAYER, top_k=4)
    activations = _last(images, "explain/activations")
    assert len(grid_cells(activations, probe.shape, CELL, 4)) == 3  # input + top_k_channels=4 channel columns
    with pytest.raises(AssertionError, match="columns"):
        grid_cells(activations, probe.shape, CELL, 5)
    assert_overlay_cells(activations, display, maps, **style, what="activations")

    # The comparison can fail: the map of another class, or the channels in another order, do not match.
    other = grad_cam(model, probe, LAYER, (model(probe).argmax(1) + 1) % 3)
    with pytest.raises(AssertionError, match="differs by"):
        assert_overlay_cells(_last(images, "explain/gradcam"), display, other, **style)
    assert not torch.equal(channels[:, 0], channels[:, 1])
    with pytest.raises(AssertionError, match="differs by"):
        assert_overlay_cells(activations, display, maps.flip(1), **style)
    # ... and the grid is the latest epoch's: the first epoch's weights gave other maps.
    first_grid = images["explain/gradcam"][0][1]
    with pytest.raises(AssertionError, match="differs by"):
        assert_overlay_cells(first_grid, display, cams, **style)


def test_targets_int_explains_that_class_not_the_prediction(tmp_path):
    target = 1
    cb = ExplainCallback(LAYER, methods=("gradcam",), targets=target, num_probe=4, cell_size=CELL, strict=True)
    _, model, images = _fit(tmp_path, cb)
    probe, grid = PROBE[:4], _last(images, "explain/gradcam")
    predicted = model(probe).argmax(1)
    assert (predicted != target).any(), "the test needs a probe image predicted as another class"
    assert_overlay_cells(grid, to_display(probe), grad_cam(model, probe, LAYER, target), cell_size=CELL)
    with pytest.raises(AssertionError, match="differs by"):  # the predicted-class maps are not what it shows
        assert_overlay_cells(grid, to_display(probe), grad_cam(model, probe, LAYER, predicted), cell_size=CELL)


def test_probe_indices_pick_those_validation_samples(tmp_path):
    indices = [5, 0, 17]
    cb = ExplainCallback(LAYER, methods=("gradcam",), probe_indices=indices, cell_size=CELL, strict=True)
    _, model, images = _fit(tmp_path, cb)
    probe, grid = PROBE[indices], _last(images, "explain/gradcam")
    probe_rows_match(grid, probe, CELL)
    assert_overlay_cells(grid, to_display(probe), grad_cam(model, probe, LAYER), cell_size=CELL)
    with pytest.raises(AssertionError, match="input cell"):  # not the first three samples
        probe_rows_match(grid, PROBE[:3], CELL)


def test_mean_and_std_undo_the_normalisation_for_display(tmp_path):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def normalised(data: TensorDataset) -> DataLoader:
        x, y = data.tensors
        return DataLoader(TensorDataset((x - m) / s, y), batch_size=8)

    cb = ExplainCallback(LAYER, methods=("gradcam",), num_probe=3, mean=mean, std=std, cell_size=CELL, strict=True)
    _, model, images = _fit(tmp_path, cb, loaders=(normalised(make_dataset(24, seed=1)), normalised(VAL)))
    grid, probe = _last(images, "explain/gradcam"), (PROBE[:3] - m) / s
    display = to_display(probe, mean, std)
    assert torch.allclose(display, PROBE[:3], atol=1e-6)  # x * std + mean: the original images
    probe_rows_match(grid, probe, CELL, display=display)
    assert_overlay_cells(grid, display, grad_cam(model, probe, LAYER), cell_size=CELL)
    with pytest.raises(AssertionError, match="input cell"):  # min-max scaling (mean/std ignored) looks different
        probe_rows_match(grid, probe, CELL)


@pytest.mark.parametrize("metrics", [True, False])
def test_metrics_false_logs_no_scalars(tmp_path, metrics):
    cb = ExplainCallback(LAYER, num_probe=2, cell_size=CELL, metrics=metrics, strict=True)
    t, _, images = _fit(tmp_path, cb)
    assert set(images) == {"explain/gradcam", "explain/saliency", "explain/activations"}  # the pictures either way
    scalars = {tag for tag in read_event_scalars(t.logger.log_dir) if tag.startswith("explain")}
    callback_metrics = {k for k in t.callback_metrics if k.startswith("explain")}
    if metrics:
        assert {"explain/gradcam/focus/border_energy", "explain/saliency/drift/emd_chance"} <= scalars
        assert "explain/gradcam/focus/border_energy" in callback_metrics
    else:
        assert scalars == set() and callback_metrics == set()


def test_tag_prefix_names_every_logged_image_and_scalar(tmp_path):
    cb = ExplainCallback(LAYER, num_probe=2, cell_size=CELL, tag_prefix="probe_views", strict=True)
    t, _, images = _fit(tmp_path, cb)
    assert set(images) == {"probe_views/gradcam", "probe_views/saliency", "probe_views/activations"}
    scalars = set(read_event_scalars(t.logger.log_dir)) - {"val_loss", "epoch"}
    assert "probe_views/gradcam/focus/border_energy" in scalars
    assert all(tag.startswith("probe_views/") for tag in scalars), sorted(scalars)
    assert not any(k.startswith("explain") for k in t.callback_metrics)


def _band(size: int, fraction: float) -> torch.Tensor:
    width = round(size * fraction)
    band = torch.zeros(size, size, dtype=torch.bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    return band


@pytest.mark.parametrize(("fraction", "area"), [(0.1, 1 - 12**2 / 16**2), (0.25, 1 - 8**2 / 16**2)])
def test_border_fraction_sets_the_band_of_the_border_metrics(tmp_path, fraction, area):
    cb = ExplainCallback(LAYER, methods=("gradcam",), num_probe=3, border_fraction=fraction, strict=True)
    t, model, _ = _fit(tmp_path, cb)
    metrics = {k: float(v) for k, v in t.callback_metrics.items()}
    assert metrics["explain/gradcam/focus/border_area"] == pytest.approx(area)
    maps = grad_cam(model, PROBE[:3], LAYER)
    energy = (maps * _band(16, fraction)).sum((1, 2)) / maps.sum((1, 2))  # share of each map inside the band
    assert metrics["explain/gradcam/focus/border_energy"] == pytest.approx(float(energy.median()), rel=1e-4)
