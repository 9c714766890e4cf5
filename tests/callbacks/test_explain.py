"""ExplainCallback in real Trainer runs, read back from real TensorBoard event files."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import (
    TinyCNN,
    assert_overlay_cells,
    grid_cells,
    loaders,
    make_dataset,
    read_event_images,
    trainer,
)
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_explain import ExplainCallback
from lightning_explain.functional import channel_activations, grad_cam
from lightning_explain.output.render import CAPTION_HEIGHT, to_display

CELL = 32  # 16 px probe images enlarged 2x
ROW = CAPTION_HEIGHT + 130  # caption band + 128 px cell + 2 px padding

TAGS = {"explain/gradcam", "explain/saliency", "explain/activations"}


def _fit(tmp_path: Path, callback: Callback | None, **kwargs):
    model = kwargs.pop("model", None) or TinyCNN()
    train, val = kwargs.pop("loaders", None) or loaders()
    logger = kwargs.pop("logger", None) or TensorBoardLogger(str(tmp_path), name="tb")
    t = trainer(tmp_path, logger=logger, callbacks=[callback] if callback else [], **kwargs)
    t.fit(model, train, val)
    return t, model


def test_logs_one_grid_per_method_per_epoch_to_tensorboard(tmp_path):
    t, _ = _fit(tmp_path, ExplainCallback(num_probe=5), max_epochs=3)
    images = read_event_images(t.logger.log_dir)
    assert set(images) == TAGS
    steps = [step for step, _ in images["explain/gradcam"]]
    assert steps == [2, 5, 8]  # 3 training batches per epoch, at val_loss's steps; the sanity check logs nothing
    _, grid = images["explain/gradcam"][-1]
    # 5 probe rows of 16x16 images enlarged 8x to 128 px, two columns (input | overlay), 2 px padding.
    assert grid.shape == (5 * ROW + 2, 2 * 130 + 2, 3)
    _, act = images["explain/activations"][0]
    assert act.shape[1] == 4 * 130 + 2  # input + top_k=3 channels


def test_every_n_epochs_and_method_subset(tmp_path):
    cb = ExplainCallback(methods=("gradcam",), every_n_epochs=2, num_probe=2)
    t, _ = _fit(tmp_path, cb, max_epochs=5)
    images = read_event_images(t.logger.log_dir)
    assert set(images) == {"explain/gradcam"}
    assert [s for s, _ in images["explain/gradcam"]] == [2, 8, 14]  # epochs 0, 2, 4


def test_grid_shows_heat_where_the_map_is(tmp_path):
    # A model that only looks at the top-left quadrant: saliency must be hot there and zero elsewhere.
    class Quadrant(TinyCNN):
        def forward(self, x):
            f = self.features(x)
            return self.head[-1](f[:, :, :4, :4].mean((2, 3)))

    t, _ = _fit(
        tmp_path,
        ExplainCallback("features.4", methods=("saliency",), num_probe=1, alpha=1.0, colormap="gray"),
        model=Quadrant(),
        max_epochs=1,
    )
    _, grid = read_event_images(t.logger.log_dir)["explain/saliency"][0]
    overlay = grid[2 + CAPTION_HEIGHT : 2 + CAPTION_HEIGHT + 128, 132:260].astype(float)
    top_left, bottom_right = overlay[:40, :40].mean(), overlay[-40:, -40:].mean()
    assert bottom_right == 0  # outside the receptive field the gradient is exactly zero: black in "gray"
    assert top_left > 40


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    def run(cb):
        pl.seed_everything(7)
        model = TinyCNN()
        train = DataLoader(make_dataset(32, seed=1), batch_size=8, shuffle=True)
        val = DataLoader(make_dataset(16, seed=2), batch_size=8)
        _fit(tmp_path / str(cb is None), cb, model=model, loaders=(train, val), max_epochs=3)
        return model.state_dict(), torch.rand(3)

    with_cb, rng_with = run(ExplainCallback(num_probe=6))
    without, rng_without = run(None)
    assert with_cb.keys() == without.keys()
    for key in with_cb:
        assert torch.equal(with_cb[key], without[key]), key  # weights and BatchNorm statistics
    assert torch.equal(rng_with, rng_without)


class _Spy(Callback):
    """Snapshots everything a probe pass must not change, just before and after ExplainCallback runs."""

    def __init__(self) -> None:
        self.snapshots: list[dict] = []

    @staticmethod
    def snap(module: nn.Module) -> dict:
        return {
            "modes": {n: m.training for n, m in module.named_modules()},
            "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
            "grads": {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()},
            "grad_ids": {n: id(p.grad) for n, p in module.named_parameters()},
            "buffers": {n: b.clone() for n, b in module.named_buffers()},
            "hooks": {
                n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
                for n, m in module.named_modules()
            },
            "rng": torch.get_rng_state(),
            "np_rng": np.random.get_state()[1].copy(),
        }

    def on_validation_epoch_end(self, trainer, pl_module):
        self.snapshots.append(self.snap(pl_module))


def _assert_same(a: dict, b: dict) -> None:
    assert a["modes"] == b["modes"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["grad_ids"] == b["grad_ids"]
    for n in a["grads"]:
        assert (a["grads"][n] is None and b["grads"][n] is None) or torch.equal(a["grads"][n], b["grads"][n])
    for n in a["buffers"]:
        assert torch.equal(a["buffers"][n], b["buffers"][n]), n
    assert a["hooks"] == b["hooks"]
    assert torch.equal(a["rng"], b["rng"])
    assert np.array_equal(a["np_rng"], b["np_rng"])


class _Frozen(TinyCNN):
    """A user model with a frozen, eval-mode first block and leftover gradients (gradient accumulation)."""

    def on_validation_epoch_end(self) -> None:
        pass

    def on_train_epoch_end(self) -> None:
        self.features[0].weight.grad = torch.full_like(self.features[0].weight, 0.5)
        self.features[1].eval()
        for p in self.features[0].parameters():
            p.requires_grad_(False)


@pytest.mark.parametrize("raises", [False, True], ids=["ok", "pass-raises"])
def test_probe_pass_restores_every_piece_of_state(tmp_path, raises):
    before, after = _Spy(), _Spy()
    transform = (lambda out: (_ for _ in ()).throw(RuntimeError("boom"))) if raises else None
    cb = ExplainCallback(num_probe=4, output_transform=transform)
    model = _Frozen()
    if raises:  # let the setup check pass; fail from the first epoch on
        cb._checked = True
        cb._prepare = lambda trainer, pl_module: setattr(cb, "_probe", cb._probe or cb._read_probe(trainer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[before, cb, after], max_epochs=2)
        t.fit(model, *loaders())
    assert len(before.snapshots) == len(after.snapshots) == 3  # sanity check + 2 epochs
    for b, a in zip(before.snapshots, after.snapshots, strict=True):
        _assert_same(b, a)
    assert before.snapshots[-1]["requires_grad"]["features.0.weight"] is False
    assert before.snapshots[-1]["modes"]["features.1"] is False
    failures = [w for w in caught if "the probe pass failed" in str(w.message)]
    assert len(failures) == (1 if raises else 0)  # warned once over two failing epochs
    if raises:
        assert "RuntimeError: boom" in str(failures[0].message)


def test_runs_under_trainer_validate_in_inference_mode(tmp_path):
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[ExplainCallback(num_probe=3)])
    t.validate(TinyCNN(), loaders()[1])
    images = read_event_images(t.logger.log_dir)
    assert set(images) == TAGS and len(images["explain/gradcam"]) == 1


def test_probe_is_the_first_validation_samples_and_survives_resume(tmp_path):
    cb = ExplainCallback(num_probe=5)
    ckpt_dir = tmp_path / "ckpt"
    from pytorch_lightning.callbacks import ModelCheckpoint

    mc = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)
    train, val = loaders()
    t = trainer(
        tmp_path,
        logger=TensorBoardLogger(str(tmp_path)),
        callbacks=[cb, mc],
        enable_checkpointing=True,
        max_epochs=2,
    )
    t.fit(TinyCNN(), train, val)
    assert torch.equal(cb._probe.images, val.dataset.tensors[0][:5])
    assert torch.equal(cb._probe.labels, val.dataset.tensors[1][:5])

    resumed = ExplainCallback(num_probe=5)
    other_val = DataLoader(make_dataset(24, seed=99), batch_size=8)  # different data: the probe must not change
    t2 = trainer(
        tmp_path,
        logger=TensorBoardLogger(str(tmp_path), version="resumed"),
        callbacks=[resumed],
        max_epochs=4,
    )
    t2.fit(TinyCNN(), train, other_val, ckpt_path=str(ckpt_dir / "last.ckpt"))
    assert torch.equal(resumed._probe.images, cb._probe.images)
    steps = [s for s, _ in read_event_images(t2.logger.log_dir)["explain/gradcam"]]
    assert steps == [8, 11]


def test_frozen_backbone_inplace_relu_and_bf16_mixed(tmp_path):
    # features.3 feeds an in-place ReLU; the backbone is frozen; training runs under bf16 autocast. The map cells
    # (not the whole grid, whose input column alone looks like "a real picture") must show the fp32 functional
    # maps: a NaN map is drawn blank (the plain input), which fails the comparison.
    model = TinyCNN()
    for p in model.features.parameters():
        p.requires_grad_(False)
    t, _ = _fit(
        tmp_path,
        ExplainCallback("features.3", num_probe=2, cell_size=CELL, strict=True),
        model=model,
        precision="bf16-mixed",
        max_epochs=1,
    )
    images = read_event_images(t.logger.log_dir)
    assert set(images) == TAGS
    probe = make_dataset(24, seed=2).tensors[0][:2]
    display = to_display(probe)
    model.eval()
    cams = grad_cam(model, probe, "features.3")
    assert (cams.flatten(1).amax(1) == 1).all() and (cams.flatten(1).std(1) > 0.1).all()  # real, non-flat maps
    _, grid = images["explain/gradcam"][0]
    assert_overlay_cells(grid, display, cams, cell_size=CELL, what="gradcam")
    _, grid = images["explain/activations"][0]
    assert_overlay_cells(grid, display, channel_activations(model, probe, "features.3")[0], cell_size=CELL)
    for tag in TAGS:  # every map cell differs from its row's input cell: something was drawn over it
        _, grid = images[tag][0]
        inputs = grid_cells(grid, probe.shape, CELL, 0)
        for row, cell in enumerate(grid_cells(grid, probe.shape, CELL, 1)):
            assert np.abs(cell.astype(int) - inputs[row]).mean() > 10, (tag, row)


def test_targets_label_and_class_names_in_captions(tmp_path):
    cb = ExplainCallback(targets="label", num_probe=2, class_names=["cat", "dog", "cow"], strict=True)
    t, _ = _fit(tmp_path, cb, max_epochs=1)
    assert set(read_event_images(t.logger.log_dir)) == TAGS
    rows = cb._row_captions({"logits": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])})
    names = ["cat", "dog", "cow"]
    labels = cb._probe.labels.tolist()
    assert rows == [f"#0 y={names[labels[0]]} p=dog", f"#1 y={names[labels[1]]} p=cow"]


def test_dict_batches_with_keys(tmp_path):
    class DictData(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.base = make_dataset(16)

        def __len__(self) -> int:
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return {"pixels": x, "target": y}

    class DictModel(TinyCNN):
        def training_step(self, batch, i):
            return super().training_step((batch["pixels"], batch["target"]), i)

        def validation_step(self, batch, i):
            return super().validation_step((batch["pixels"], batch["target"]), i)

    dl = DataLoader(DictData(), batch_size=8)
    cb = ExplainCallback(num_probe=3, input_key="pixels", label_key="target", targets="label")
    t, _ = _fit(tmp_path, cb, model=DictModel(), loaders=(dl, dl), max_epochs=1)
    assert torch.equal(cb._probe.labels, DictData().base.tensors[1][:3])
    assert set(read_event_images(t.logger.log_dir)) == TAGS


def test_explicit_probe_tensor(tmp_path):
    probe = torch.rand(3, 3, 16, 16)
    cb = ExplainCallback(probe=probe, probe_labels=torch.tensor([0, 1, 2]), targets="label")
    t, _ = _fit(tmp_path, cb, max_epochs=1)
    assert torch.equal(cb._probe.images, probe)
    _, grid = read_event_images(t.logger.log_dir)["explain/gradcam"][0]
    assert grid.shape[0] == 3 * ROW + 2


# ---------------------------------------------------------------------------------------- bad input


def test_unknown_layer_fails_before_the_first_training_step(tmp_path):
    steps = []

    class Counting(TinyCNN):
        def training_step(self, batch, i):
            steps.append(i)
            return super().training_step(batch, i)

    with pytest.raises(ValueError, match=r"'features.9' does not exist.*'features.\d'"):
        _fit(tmp_path, ExplainCallback("features.9"), model=Counting())
    assert steps == []


def test_non_4d_target_layer_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"'head.3' outputs \[2, 3\].*4-D \[B, C, H, W\]"):
        _fit(tmp_path, ExplainCallback("head.3"), num_sanity_val_steps=0)


def test_no_validation_data_and_no_probe(tmp_path):
    model = TinyCNN()
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[ExplainCallback()])
    with pytest.raises(ValueError, match="no validation data and no probe"):
        t.fit(model, loaders()[0])


def test_probe_larger_than_validation_set_uses_what_there_is(tmp_path):
    val = DataLoader(make_dataset(5, seed=3), batch_size=4)
    cb = ExplainCallback(num_probe=16)
    with pytest.warns(UserWarning, match="num_probe=16 but the validation dataset has only 5"):
        t, _ = _fit(tmp_path, cb, loaders=(loaders()[0], val), max_epochs=1)
    assert len(cb._probe) == 5
    _, grid = read_event_images(t.logger.log_dir)["explain/gradcam"][0]
    assert grid.shape[0] == 5 * ROW + 2


def test_default_layer_is_found_on_the_probe_and_reported(tmp_path, caplog):
    """target_layer=None: the layer is found by running the model (TinyCNN's feature stage, not a conv inside
    it), kept in layer_choice, printed once and logged as TensorBoard text; the maps are that layer's Grad-CAM."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = ExplainCallback(num_probe=2, methods=("gradcam",))
    console = logging.getLogger("pytorch_lightning.lightning_explain")  # under Lightning's INFO console handler
    console.addHandler(caplog.handler)
    try:
        t, _ = _fit(tmp_path, cb, max_epochs=2)
    finally:
        console.removeHandler(caplog.handler)
    assert cb.layer_choice is not None and cb.layer_choice.name == "features"
    assert cb.layer_choice.layout.describe() == "nchw [B, C, 8, 8]"
    said = [r.getMessage() for r in caplog.records if "ExplainCallback explains layer" in r.getMessage()]
    assert said == ["ExplainCallback explains layer 'features' (nchw [B, C, 8, 8]): " + cb.layer_choice.reason + "."]
    acc = EventAccumulator(t.logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = acc.Tensors("explain/layer/text_summary")
    assert text.tensor_proto.string_val[0].decode() == said[0]


def test_model_output_that_is_not_logits_names_output_transform(tmp_path):
    class Pair(TinyCNN):
        def forward(self, x):
            return super().forward(x), x.mean()

        def training_step(self, batch, i):
            return nn.functional.cross_entropy(self(batch[0])[0], batch[1])

        def validation_step(self, batch, i):
            pass

    with pytest.raises(ValueError, match=r"returned a tuple.*output_transform="):
        _fit(tmp_path, ExplainCallback(), model=Pair())
    t, _ = _fit(
        tmp_path / "ok",
        ExplainCallback(output_transform=lambda out: out[0], num_probe=2),
        model=Pair(),
        max_epochs=1,
    )
    assert set(read_event_images(t.logger.log_dir)) == TAGS


def test_nan_maps_warn_render_blank_and_training_continues(tmp_path):
    class Diverged(TinyCNN):
        def forward(self, x):
            out = super().forward(x)
            if not self.training and not self.trainer.sanity_checking and self.current_epoch >= 1:
                out = out * torch.tensor(float("nan"))
            return out

        def validation_step(self, batch, i):
            pass

    cb = ExplainCallback(num_probe=2)
    with pytest.warns(UserWarning, match=r"saliency map of probe images \[0, 1\] holds NaN"):
        t, _ = _fit(tmp_path, cb, model=Diverged(), max_epochs=3)
    assert t.current_epoch == 3  # training went on to the end
    images = read_event_images(t.logger.log_dir)
    _, input_cell_overlay = images["explain/saliency"][-1]
    cell_rows = slice(2 + CAPTION_HEIGHT, 2 + CAPTION_HEIGHT + 128)
    left, right = input_cell_overlay[cell_rows, 2:130], input_cell_overlay[cell_rows, 132:260]
    assert np.array_equal(left, right)  # blank: the overlay cell shows the plain input


def test_failure_at_a_later_epoch_warns_once_and_strict_raises(tmp_path):
    class BreaksLater(TinyCNN):
        def forward(self, x):
            if torch.is_grad_enabled() and not self.training and self.current_epoch >= 1:
                raise RuntimeError("explanation broke at epoch 1")
            return super().forward(x)

    with pytest.warns(UserWarning, match="failed at epoch 1.*explanation broke.*strict=True"):
        t, _ = _fit(tmp_path, ExplainCallback(num_probe=2), model=BreaksLater(), max_epochs=3)
    assert t.current_epoch == 3
    assert [s for s, _ in read_event_images(t.logger.log_dir)["explain/gradcam"]] == [2]
    with pytest.raises(RuntimeError, match="explanation broke"):
        _fit(tmp_path / "strict", ExplainCallback(num_probe=2, strict=True), model=BreaksLater(), max_epochs=3)


def test_a_rendering_failure_warns_once_and_training_continues(tmp_path, monkeypatch):
    import lightning_explain.epoch.grids as explain_module

    def broken_display(*args, **kwargs):  # fault injection: the probe cannot be rendered
        raise RuntimeError("display broke")

    monkeypatch.setattr(explain_module, "to_display", broken_display)
    with pytest.warns(UserWarning, match="rendering the probe images failed at epoch 0.*display broke") as record:
        t, _ = _fit(tmp_path, ExplainCallback(num_probe=2), max_epochs=3)
    assert t.current_epoch == 3
    assert sum("rendering the probe images failed" in str(w.message) for w in record) == 1
    assert "explain/gradcam/drift/emd_prev" in t.callback_metrics  # the numbers were still logged
    with pytest.raises(RuntimeError, match="display broke"):
        _fit(tmp_path / "strict", ExplainCallback(num_probe=2, strict=True), max_epochs=1)


def test_no_image_logger_writes_pngs_with_one_warning(tmp_path):
    logger = CSVLogger(str(tmp_path), name="csv")
    with pytest.warns(UserWarning, match="no logger in the Trainer takes images") as record:
        _fit(tmp_path, ExplainCallback(num_probe=2), logger=logger, max_epochs=2)
    assert sum("no logger in the Trainer" in str(w.message) for w in record) == 1
    root = Path(logger.log_dir) / "explain_images" / "explain"
    assert sorted(p.name for p in (root / "gradcam").iterdir()) == [
        "epoch=0000-step=0000002.png",
        "epoch=0001-step=0000005.png",
    ]
    assert {p.name for p in root.iterdir()} == {"gradcam", "saliency", "activations"}

    t2 = trainer(tmp_path / "none", logger=False, callbacks=[ExplainCallback(num_probe=2)], max_epochs=1)
    with pytest.warns(UserWarning, match="PNG files under"):
        t2.fit(TinyCNN(), *loaders())
    assert (tmp_path / "none" / "explain_images" / "explain" / "saliency" / "epoch=0000-step=0000002.png").exists()


def test_log_image_loggers_receive_the_grids(tmp_path):
    from pytorch_lightning.loggers import Logger

    class ImageLogger(Logger):
        def __init__(self) -> None:
            super().__init__()
            self.images: list[tuple[str, int, tuple]] = []

        name = "img"
        version = "0"

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_image(self, key, images, step=None, **kwargs):
            self.images.append((key, step, images[0].shape))

    img_logger, tb = ImageLogger(), TensorBoardLogger(str(tmp_path))
    cb = ExplainCallback(num_probe=2)
    t = trainer(tmp_path, logger=[tb, img_logger], callbacks=[cb], max_epochs=1)
    t.fit(TinyCNN(), *loaders())
    assert {k for k, _, _ in img_logger.images} == TAGS
    assert all(step == 2 and shape[2] == 3 for _, step, shape in img_logger.images)
    assert set(read_event_images(tb.log_dir)) == TAGS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ("gradcam", "kernel_shap")}, "methods must be a non-empty subset"),
        ({"num_probe": 0}, "num_probe must be an integer >= 1"),
        ({"every_n_epochs": 0}, "every_n_epochs must be"),
        ({"targets": "true"}, "targets must be 'predicted', 'label' or a class index"),
        ({"mean": [0.5, 0.5, 0.5]}, "mean and std go together"),
        ({"mean": [0.5], "std": [0.1, 0.2]}, "one per channel"),
        ({"std": [0.0, 1, 1], "mean": [0, 0, 0]}, "std values must be > 0"),
        ({"colormap": "nope"}, "not a matplotlib colour map"),
        ({"alpha": 2.0}, r"alpha must lie in \[0, 1\]"),
        ({"probe": torch.zeros(2, 3, 8, 8), "probe_indices": [0]}, "either probe"),
        ({"probe": torch.zeros(2, 3, 8, 8), "targets": "label"}, "needs labels"),
        ({"probe": torch.zeros(2, 3, 8, 8, dtype=torch.bool)}, "floating-point"),  # uint8 is fine: see test_inputs
    ],
)
def test_arguments_are_checked_in_init(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ExplainCallback(**kwargs)


def test_state_dict_roundtrip_and_tolerates_missing_keys():
    cb = ExplainCallback(probe=torch.rand(2, 3, 8, 8), probe_labels=torch.tensor([1, 0]))
    state = copy.deepcopy(cb.state_dict())
    fresh = ExplainCallback()
    fresh.load_state_dict(state)
    assert torch.equal(fresh._probe.images, cb._probe.images) and torch.equal(fresh._probe.labels, cb._probe.labels)
    fresh.load_state_dict({})  # an older or empty checkpoint
    assert ExplainCallback("a").state_key != ExplainCallback("b").state_key


def test_class_names_come_from_the_datasets_classes(tmp_path):
    """No class_names given: the validation dataset's ``classes`` (ImageFolder, CIFAR) name the captions."""

    class Named(TensorDataset):
        classes = ("cat", "dog", "emu")

    base = loaders()[1].dataset
    named = Named(*base.tensors)
    cb = ExplainCallback(num_probe=2, targets="label")
    _fit(tmp_path, cb, loaders=(DataLoader(named, batch_size=8), DataLoader(torch.utils.data.Subset(named, [0, 1]))))
    assert cb.class_names == list(Named.classes)
    labels = cb._probe.labels.tolist()
    rows = cb._row_captions({"logits": torch.eye(3)[labels]})  # predictions equal to the labels
    assert rows == [f"#{i} y={Named.classes[y]} p={Named.classes[y]}" for i, y in enumerate(labels)]
