"""ExplainCallback's faithfulness numbers are the functional ones: ``latest_per_image`` equals direct
``deletion_insertion`` / ``road`` calls on the same maps and the same (given, not predicted) classes, and
``road_gap`` is ``road_lerf - road_morf`` (positive for a faithful map)."""

from __future__ import annotations

import torch
from conftest import TinyCNN, read_event_scalars, trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback
from lightning_explain.functional import explain
from lightning_explain.functional.faithfulness import deletion_insertion, road

LAYER = "features.3"
N = 3
ORDERS = ("morf", "lerf")
SPEC = {"max_images": N, "steps": 4, "baseline": "blur", "blur_sigma": 1.5, "percentiles": (20.0, 60.0)}


def _model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.head[-1].weight.mul_(40)  # probabilities that move when pixels change
    return model.eval()


def test_latest_per_image_equals_direct_calls_on_the_same_maps_and_classes(tmp_path):
    model = _model()
    images = torch.rand(N, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = (model(images).argmax(1) + 1) % 3  # never the predicted class: an ignored target shows
    callback = ExplainCallback(LAYER, num_probe=N, targets="label", faithfulness=SPEC, methods=("gradcam", "saliency"))
    run = trainer(tmp_path, callbacks=[callback])
    run.validate(model, DataLoader(TensorDataset(images, labels), batch_size=N))
    model.eval()

    result = explain(model, images, LAYER, ["gradcam", "saliency"], labels)
    assert torch.equal(result.targets, labels)
    scalars = read_event_scalars(run.logger.log_dir)
    for method in ("gradcam", "saliency"):
        maps = result[method]
        curves = deletion_insertion(model, images, maps, labels, steps=4, baseline="blur", blur_sigma=1.5)
        morf, lerf = (
            road(model, images, maps, labels, percentiles=SPEC["percentiles"], order=o).mean(1) for o in ORDERS
        )
        expected = {**curves, "road_morf": morf, "road_lerf": lerf, "road_gap": lerf - morf}
        # The predicted class scores other numbers: the check can tell which class was scored.
        predicted = deletion_insertion(model, images, maps, None, steps=4, baseline="blur", blur_sigma=1.5)
        assert (predicted["insertion_auc"] - curves["insertion_auc"]).abs().max() > 1e-3
        for name, value in expected.items():
            tag = f"explain/{method}/faithfulness/{name}"
            got = callback.latest_per_image[tag]
            torch.testing.assert_close(got, value, atol=1e-5, rtol=0, msg=lambda m, tag=tag: f"{tag}: {m}")
            (point,) = scalars[tag]
            median = float(value.median())  # the logged scalar is the median over the probe images
            assert abs(point[1] - median) < 1e-5, (tag, point[1], median)
        assert (expected["road_gap"] != 0).all()  # a sign flip of the gap would show
