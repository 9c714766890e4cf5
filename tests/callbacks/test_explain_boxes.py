"""ExplainCallback given boxes instead of masks: from the batch, explicit for a probe, and the setup errors."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, loaders, make_dataset, trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback
from lightning_explain.functional.boxes import boxes_to_masks

PROBE = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
BOXES = torch.tensor([[0.0, 0.0, 6.0, 6.0], [2.0, 3.0, 9.0, 16.0], [10.0, 0.0, 16.0, 5.0], [4.5, 4.5, 11.5, 11.5]])


def test_boxes_give_the_focus_numbers_of_their_filled_masks(tmp_path) -> None:
    masks = boxes_to_masks(BOXES, 16, 16)
    by_mask = ExplainCallback("features.3", probe=PROBE, probe_object_masks=masks, probe_cue_masks=~masks)
    by_box = ExplainCallback("features.3", probe=PROBE, probe_object_masks=BOXES, tag_prefix="box")
    by_list = ExplainCallback(
        "features.3",
        probe=PROBE,
        probe_object_masks=[b.tolist() for b in BOXES],  # one box per image, as lists
        probe_cue_masks=[[[0, 0, 16, 16]]] * 4,  # a list of boxes per image
        tag_prefix="list",
    )
    trainer(tmp_path, logger=False, callbacks=[by_mask, by_box, by_list], max_epochs=1).fit(TinyCNN(), *loaders())
    assert torch.equal(by_box._probe.masks["object"], masks) and torch.equal(by_list._probe.masks["object"], masks)
    keys = [k for k in by_mask.latest_per_image if "/focus/" in k and "cue" not in k]
    assert any(k.endswith("/focus/lift") for k in keys) and any(k.endswith("/focus/mask_auc") for k in keys)
    for key in keys:
        for other, prefix in ((by_box, "box"), (by_list, "list")):
            mine = other.latest_per_image[prefix + key[len("explain") :]]
            torch.testing.assert_close(mine, by_mask.latest_per_image[key], equal_nan=True)
    full = by_list.latest_per_image["list/gradcam/focus/cue_area"]
    assert torch.equal(full, torch.ones(4))  # the whole-image cue box covers every pixel


def test_boxes_from_the_batch_through_object_mask_key(tmp_path) -> None:
    data = make_dataset(24, 16, seed=2)
    generator = torch.Generator().manual_seed(3)
    corner = torch.randint(0, 8, (24, 2), generator=generator).float()
    boxes = torch.cat([corner, corner + 8], dim=1)  # [24, 4] xyxy, inside the 16 x 16 images
    val = DataLoader(TensorDataset(*data.tensors, boxes), batch_size=8)
    cb = ExplainCallback("features.3", num_probe=6, object_mask_key=2, methods=("gradcam",))
    trainer(tmp_path, logger=False, callbacks=[cb], max_epochs=1).fit(TinyCNN(), loaders()[0], val)
    assert torch.equal(cb._probe.masks["object"], boxes_to_masks(boxes[:6], 16, 16))
    assert cb._probe.masks["object"].sum(dim=(1, 2)).tolist() == [64] * 6
    assert cb.latest_per_image["explain/gradcam/focus/object_area"].tolist() == [0.25] * 6


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (torch.tensor([[0.0, 0.0, 17.0, 4.0]] * 4), r"probe_object_masks\[0\] = .* outside the 16 x 16"),
        (torch.zeros(4, 5), r"probe_object_masks has shape \[4, 5\]; boxes must be \[B, 4\]"),
        (torch.zeros(3, 4), r"probe_object_masks has boxes for 3 images; expected one entry per image, 4"),
    ],
)
def test_bad_explicit_boxes_fail_when_the_callback_is_made(boxes, match) -> None:
    with pytest.raises(ValueError, match=match):
        ExplainCallback("features.3", probe=PROBE, probe_object_masks=boxes)


def test_boxes_outside_the_image_in_the_batch_fail_before_training(tmp_path) -> None:
    data = make_dataset(8, 16, seed=2)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 8)
    boxes[1] = torch.tensor([4.0, 4.0, 20.0, 8.0])
    val = DataLoader(TensorDataset(*data.tensors, boxes), batch_size=8)
    model = TinyCNN()
    before = [p.detach().clone() for p in model.parameters()]
    cb = ExplainCallback("features.3", object_mask_key=2)
    with pytest.raises(ValueError, match=r"object_mask_key=2\[1\] = \[\[4.0, 4.0, 20.0, 8.0\]\] lies .*outside"):
        trainer(tmp_path, logger=False, callbacks=[cb], max_epochs=1).fit(model, loaders()[0], val)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # no step was taken
