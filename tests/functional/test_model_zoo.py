"""The model zoo (issue #13 item 8): the default layer, Grad-CAM and the attention methods on 34 architectures from
torchvision, timm and Hugging Face transformers, all small and at random init (see ``tests/zoo_cases.py``).

For every architecture:

- the model's own feature API gives the grid written in the case (so the table of expected grids is checked too);
- :func:`locate_layer` picks a layer on that grid, with the expected prefix tokens and the feature map's channels;
- ``explain(model, x, None, ["gradcam", "saliency", "activations"])`` is finite and Grad-CAM is not flat for at
  least one of the two images;
- class-token ViTs: ``attention``, ``rollout`` and ``grad_rollout`` give finite, non-constant maps on the patch
  grid; every other model gets a ValueError naming its type and pointing at Grad-CAM on a stage;
- one ``lightning`` Trainer epoch with ``ExplainCallback()`` at its defaults logs every default grid, on a layer of
  that grid (this test runs last for each model: it trains the model).

Each model is built once (a module-scoped parametrised fixture: pytest runs all tests of one case together).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from conftest import read_event_images, require_module
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from zoo_cases import CASES, ZooCase, build, images

from lightning_explain import ExplainCallback
from lightning_explain.functional import explain
from lightning_explain.functional.target_layer import locate_layer
from lightning_explain.functional.targets import logits_from_output
from lightning_explain.functional.vit_layouts import inner_model

require_module("timm")
require_module("transformers")
L = require_module("lightning")

Zoo = tuple[ZooCase, nn.Module, Tensor]


@pytest.fixture(scope="module", params=CASES, ids=[case.id for case in CASES])
def zoo(request: pytest.FixtureRequest) -> Iterator[Zoo]:
    case: ZooCase = request.param
    yield case, build(case), images(case)


def _prefix(case: ZooCase) -> int:
    return int(case.feature_layout.partition("+")[2] or 0)


def _feature_grid_and_channels(case: ZooCase, features: Tensor) -> tuple[tuple[int, int], int]:
    """Read the model's own last feature map: nchw, nhwc, or tokens after a known number of prefix tokens."""
    if case.feature_layout == "nchw":
        return (features.shape[2], features.shape[3]), features.shape[1]
    if case.feature_layout == "nhwc":
        return (features.shape[1], features.shape[2]), features.shape[3]
    side = math.isqrt(features.shape[1] - _prefix(case))
    assert side * side == features.shape[1] - _prefix(case), f"{list(features.shape)} is not prefix + a square grid"
    return (side, side), features.shape[2]


def test_expected_grid_is_the_models_own_last_feature_grid(zoo: Zoo) -> None:
    case, model, x = zoo
    grid, _ = _feature_grid_and_channels(case, case.features(model, x))
    assert grid == case.grid


def test_default_layer_is_on_the_last_feature_grid(zoo: Zoo, request: pytest.FixtureRequest) -> None:
    case, model, x = zoo
    if case.known_bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"package bug: {case.known_bug}"))
    _, channels = _feature_grid_and_channels(case, case.features(model, x))
    choice = locate_layer(model, x)
    assert choice.layout.grid == case.grid, choice.describe()
    assert choice.layout.prefix_tokens == _prefix(case), choice.describe()
    with torch.no_grad():
        seen: list[Tensor] = []
        handle = model.get_submodule(choice.name).register_forward_hook(lambda m, a, out: seen.append(out))
        try:
            model(x)
        finally:
            handle.remove()
    output = seen[-1][0] if isinstance(seen[-1], tuple) else seen[-1]
    assert choice.layout.to_nchw(output).shape[1] == channels, choice.describe()


def test_gradcam_saliency_activations_are_finite_and_gradcam_is_not_flat(zoo: Zoo) -> None:
    case, model, x = zoo
    result = explain(model, x, None, ["gradcam", "saliency", "activations"], upsample=False, normalize=False)
    for method, value in result.items():
        assert torch.isfinite(value).all(), method
    cam = result["gradcam"].flatten(1)
    assert cam.shape[1] == case.grid[0] * case.grid[1]
    spread = (cam.amax(1) - cam.amin(1)) / cam.abs().amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
    assert spread.max() > 0.01, f"Grad-CAM is flat on both images: {cam.tolist()}"
    assert result["saliency"].shape == (2, case.size, case.size)


def test_attention_methods_need_a_class_token(zoo: Zoo) -> None:
    case, model, x = zoo
    methods = ["attention", "rollout", "grad_rollout"]
    if not case.class_token:
        with pytest.raises(ValueError, match=type(inner_model(model)).__name__) as raised:
            explain(model, x, None, ["attention"])
        assert "Grad-CAM on a stage" in str(raised.value)
        return
    result = explain(model, x, None, methods, upsample=False, normalize=False)
    for method in methods:
        maps = result[method]
        assert maps.shape == (2, *case.grid), method
        assert torch.isfinite(maps).all(), method
        assert (maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).any(), f"{method} is constant"


class _Classifier(L.LightningModule):
    """The zoo model as a LightningModule, as a user would wrap it (``import lightning as L``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> object:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(logits_from_output(self(batch[0])), batch[1])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_one_trainer_epoch_with_the_default_callback(zoo: Zoo, tmp_path) -> None:
    case, model, _ = zoo
    data = TensorDataset(images(case, 4), torch.arange(4) % 3)
    callback = ExplainCallback(num_probe=2)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=callback,
        logger=L.pytorch.loggers.TensorBoardLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_Classifier(model), DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    logged = read_event_images(trainer.logger.log_dir)
    assert {"explain/gradcam", "explain/saliency", "explain/activations"} <= set(logged)
    assert callback.layer_choice is not None and callback.layer_choice.layout.grid == case.grid
