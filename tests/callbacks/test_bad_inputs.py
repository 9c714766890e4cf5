"""What each bad input gets: one list of cases, the same as the table of the documentation page "Inputs and errors"
(docs/guides/inputs.md). Every case runs for real (a Trainer fit or the constructor) and checks the exact text the
user sees; a second test checks that every case id is in that table, so the two stay in sync."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN, loaders, make_dataset, trainer
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_explain import ExplainCallback, FeatureInversion

#: The documentation page with the table (it was in the README before the documentation site).
INPUTS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "inputs.md"


def _fit(tmp_path: Path, cb: ExplainCallback, model: nn.Module | None = None, val: Any = "default", **kwargs: Any):
    train, default_val = loaders()
    logger = kwargs.pop("logger", None) or TensorBoardLogger(str(tmp_path), name="tb")
    kwargs.setdefault("max_epochs", 1)
    t = trainer(tmp_path, logger=logger, callbacks=[cb], **kwargs)
    t.fit(model or TinyCNN(), train, default_val if isinstance(val, str) else val)


class _Pairs(Dataset):
    """Samples of a given structure built from the usual tiny dataset."""

    def __init__(self, make: Callable[[torch.Tensor, torch.Tensor], Any], n: int = 8) -> None:
        self.base, self.make = make_dataset(n, seed=2), make

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        return self.make(*self.base[i])


class _Pair(TinyCNN):
    def forward(self, x):
        return super().forward(x), x.mean()

    def training_step(self, batch, i):
        return nn.functional.cross_entropy(self(batch[0])[0], batch[1])

    def validation_step(self, batch, i):
        pass


class _Unused(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Conv2d(16, 16, 1)  # registered, never called in forward


class _BreaksLater(TinyCNN):
    def forward(self, x):
        if torch.is_grad_enabled() and not self.training and self.current_epoch >= 1:
            raise RuntimeError("explanation broke at epoch 1")
        return super().forward(x)


def _nan_val() -> DataLoader:
    ds = make_dataset(8, seed=2)
    x = ds.tensors[0].clone()
    x[1, 0, 3, 3] = float("nan")
    return DataLoader(TensorDataset(x, ds.tensors[1]), batch_size=4)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # an exception class name, or "UserWarning" (training goes on)
    message: str  # a literal part of the text the user sees
    run: Callable[[Path], Any]
    no_sanity: bool = False


def _no_sanity(tmp_path: Path, cb: ExplainCallback, **kwargs: Any):
    return _fit(tmp_path, cb, num_sanity_val_steps=0, **kwargs)


CASES = [
    Case(
        "unknown_layer",
        "ValueError",
        "target_layer 'features.9' does not exist in TinyCNN. Closest existing names: 'features.4', 'features.3', "
        "'features.2', 'features.1', 'features.0'. Use a dotted name from model.named_modules(), or "
        "target_layer=None for the default layer.",
        lambda p: _fit(p, ExplainCallback("features.9")),
    ),
    Case(
        "layer_not_conv",
        "ValueError",
        "target_layer 'head.3' outputs [2, 3]; Grad-CAM and channel activations need a 4-D [B, C, H, W] feature map "
        "([B, H, W, C] too) or [B, T, C] tokens. "
        "Choose a convolutional layer (e.g. the last conv block) or a transformer block, or target_layer=None for the "
        "default layer.",
        lambda p: _fit(p, ExplainCallback("head.3")),
    ),
    Case(
        "layer_never_called",
        "RuntimeError",
        "target_layer 'spare' was not called during the forward pass; pick a layer that the model's forward() uses.",
        lambda p: _fit(p, ExplainCallback("spare"), model=_Unused()),
    ),
    Case(
        "method_typo",
        "ValueError",
        "; got ['gradcam', 'gradcm']. Did you mean 'gradcam' for 'gradcm'?",
        lambda p: ExplainCallback(methods=("gradcam", "gradcm")),
    ),
    Case(
        "attention_on_a_cnn",
        "ValueError",
        "['attention'] read a vision transformer's attention; TinyCNN is not a supported ViT (supported: torc"
        "hvision.models.VisionTransformer, timm VisionTransformer (and subclasses such as DeiT distilled, Dei"
        "T-3 or models with register tokens) and Eva (EVA-02), and Hugging Face ViT, DeiT, BEiT and DINOv2 (t"
        "ransformers >= 5)). Models without a class token (Swin, PVT, MaxViT, hybrids) have no class-token at"
        "tention: use Grad-CAM on a stage instead (methods=['gradcam'] with the default layer).",
        lambda p: _fit(p, ExplainCallback(methods=("attention",))),
    ),
    Case(
        "target_out_of_range",
        "ValueError",
        "target class indices must lie in [0, 2] for a model with 3 outputs; got [7, 7].",
        lambda p: _fit(p, ExplainCallback(targets=7)),
    ),
    Case(
        "num_probe_zero",
        "ValueError",
        "num_probe must be an integer >= 1; got 0.",
        lambda p: ExplainCallback(num_probe=0),
    ),
    Case(
        "probe_wrong_dims",
        "ValueError",
        "inputs must be a [B, C, H, W] image batch, got shape [3, 16, 16].",
        lambda p: ExplainCallback(probe=torch.rand(3, 16, 16)),
    ),
    Case(
        "labels_length_mismatch",
        "ValueError",
        "probe_labels has 2 entries for 4 images.",
        lambda p: ExplainCallback(probe=torch.rand(4, 3, 16, 16), probe_labels=torch.tensor([0, 1])),
    ),
    Case(
        "probe_indices_out_of_range",
        "IndexError",
        "probe_indices [100] are out of range for a validation dataset of 24 samples.",
        lambda p: _fit(p, ExplainCallback(probe_indices=[0, 100])),
    ),
    Case(
        "no_validation_loop",
        "ValueError",
        "ExplainCallback found no validation data and no probe: it explains a probe batch at the end of each "
        "validation epoch. Give the Trainer validation data (a validation_step and val_dataloaders=... or a "
        "val_dataloader() hook, limit_val_batches > 0).",
        lambda p: _fit(p, ExplainCallback(), val=None),
    ),
    Case(
        "empty_validation_set",
        "ValueError",
        "the validation dataset is empty; ExplainCallback has no images to explain.",
        lambda p: _no_sanity(p, ExplainCallback(), val=DataLoader(make_dataset(0), batch_size=4)),
    ),
    Case(
        "batch_without_images",
        "TypeError",
        "the batch's images are a tuple, not a tensor. Pass unpack_batch=<callable returning (images, labels or "
        "None)>, or input_key=... for dict batches.",
        lambda p: _no_sanity(p, ExplainCallback(), val=DataLoader(_Pairs(lambda x, y: ("an image path", y)))),
    ),
    Case(
        "dict_batch_wrong_input_key",
        "ValueError",
        "the batch is a mapping without the key 'image' (keys: ['img', 'label']). Pass input_key='<key of the "
        "images>' (and label_key=...), or unpack_batch=<callable>.",
        lambda p: _no_sanity(p, ExplainCallback(), val=DataLoader(_Pairs(lambda x, y: {"img": x, "label": y}))),
    ),
    Case(
        "targets_label_without_labels",
        "ValueError",
        "targets='label' but the validation batches carry no class labels ([B] integers). Use targets='predicted', "
        "label_key=... for dict batches, or unpack_batch=<callable>.",
        lambda p: _no_sanity(
            p, ExplainCallback(targets="label"), val=DataLoader(_Pairs(lambda x, y: (x, "no label")), batch_size=4)
        ),
    ),
    Case(
        "output_not_logits",
        "ValueError",
        "the model returned a tuple of 2 items; explanations need [B, C] class scores (logits) or [B, C, H, W] dense "
        "scores. Pass output_transform=<callable mapping the model output to them>, e.g. output_transform=lambda "
        "out: out[0] for a model that returns (logits, aux).",
        lambda p: _fit(p, ExplainCallback(), model=_Pair()),
    ),
    Case(
        "integer_images",
        "TypeError",
        "inputs have dtype torch.uint8; gradient maps need floating-point images. Convert them in the dataset "
        "transform (e.g. torchvision.transforms.v2.ToDtype(torch.float32, scale=True)) or pass a float probe.",
        lambda p: FeatureInversion("features.3", probe=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
    ),
    Case(
        "nan_in_probe_images",
        "UserWarning",
        "ExplainCallback: probe images [1] hold NaN or inf values; their maps will be NaN and shown blank. Choose "
        "other images with probe_indices=[...] or clean the data.",
        lambda p: _no_sanity(p, ExplainCallback(num_probe=4), val=_nan_val()),
    ),
    Case(
        "mean_std_wrong_length",
        "ValueError",
        "mean has 2 values but the probe images have 3 channels; give one value per channel (or a single value for "
        "all), e.g. mean=[0.5, 0.5, 0.5].",
        lambda p: _fit(p, ExplainCallback(mean=[0.5, 0.5], std=[0.2, 0.2])),
    ),
    Case(
        "mean_without_std",
        "ValueError",
        "mean and std go together: pass both (to undo input normalisation) or neither.",
        lambda p: ExplainCallback(mean=[0.5, 0.5, 0.5]),
    ),
    Case(
        "mask_key_missing",
        "ValueError",
        "object_mask_key=5 selects nothing in a validation batch (list). Give the tuple position or dict key of the "
        "mask, or pass the masks for the probe explicitly.",
        lambda p: _no_sanity(p, ExplainCallback(object_mask_key=5)),
    ),
    Case(
        "probe_larger_than_val_set",
        "UserWarning",
        "num_probe=16 but the validation dataset has only 8 samples; the probe uses those 8.",
        lambda p: _fit(p, ExplainCallback(), val=DataLoader(make_dataset(8), batch_size=4)),
    ),
    Case(
        "no_image_logger",
        "UserWarning",
        "no logger in the Trainer takes images (TensorBoardLogger, or one with log_image); the explanation grids are "
        "written as PNG files under",
        lambda p: _fit(p, ExplainCallback(num_probe=2), logger=CSVLogger(str(p))),
    ),
    Case(
        "failure_mid_training",
        "UserWarning",
        "ExplainCallback: the probe pass failed at epoch 1 (RuntimeError: explanation broke at epoch 1). It is "
        "skipped and training continues; this warning is shown once. Pass strict=True to raise instead.",
        lambda p: _fit(p, ExplainCallback(num_probe=2), model=_BreaksLater(), max_epochs=2),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_the_documented_message(tmp_path, case):
    if case.kind == "UserWarning":
        with pytest.warns(UserWarning, match=re.escape(case.message)):
            case.run(tmp_path)
    else:
        with pytest.raises(Exception, match=re.escape(case.message)) as info:
            case.run(tmp_path)
        assert type(info.value).__name__ == case.kind


def test_every_case_is_in_the_docs_table():
    text = INPUTS_PAGE.read_text()
    section = text[text.index("# Inputs and errors") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    ids = [re.match(r"\| `([a-z0-9_]+)`", row).group(1) for row in rows]
    assert ids == [c.id for c in CASES]
    assert len(ids) >= 15
    for row, case in zip(rows, CASES, strict=True):
        assert case.message in row and case.kind in row, case.id
