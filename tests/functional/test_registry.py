"""Every registered method, from the registry (not a hand list): shape, finiteness, invisibility to training and
option checking; a toy method registered here works through ``explain`` and the callback like a built-in one."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from conftest import TinyCNN, loaders, read_event_images, trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

import lightning_explain.functional as F
from lightning_explain import ExplainCallback
from lightning_explain.functional import (
    ATTENTION_METHODS,
    EXPENSIVE_METHODS,
    LAYER_METHODS,
    METHOD_OPTIONS,
    METHODS,
    MethodContext,
    MethodSpec,
    canonical_methods,
    explain,
    hooked_pass,
    method_spec,
    normalize_maps,
    register_method,
    registered_methods,
    unregister_method,
)
from lightning_explain.functional.engine import PIXEL_METHODS

SIZE = 16
BATCH = 2
CNN_LAYER = "features.3"
#: Fewer samples, steps and windows than the defaults, only to keep the multi-pass methods fast; a method not named
#: here runs with its defaults (so a new method is covered without being added here).
FAST: dict[str, dict[str, Any]] = {
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 4},
    "lime": {"samples": 16, "segments": 4},
    "occlusion": {"window": 8, "stride": 8},
}


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    model = TinyCNN().eval()
    model.features[0].train()  # mixed train/eval flags (a conv: no running stats, no randomness) must survive
    model.features[0].weight.requires_grad_(False)  # a frozen parameter must stay frozen
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)  # accumulated gradients must be left alone (same tensor, same values)
    return model


def _vit() -> nn.Module:
    torch.manual_seed(2)
    model = torchvision.models.VisionTransformer(SIZE, 4, 2, 2, 16, 32, num_classes=3).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: no gradient at all
    model.conv_proj.train()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {"cnn": _cnn(), "vit": _vit()}


def _model_for(name: str, models: dict[str, nn.Module]) -> tuple[nn.Module, str | None]:
    if name in ATTENTION_METHODS:
        return models["vit"], None
    return models["cnn"], CNN_LAYER


def _hooks(model: nn.Module) -> int:
    from torch.nn.modules import module as torch_module

    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    own = sum(len(getattr(m, attr)) for m in model.modules() for attr in names)
    shared = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    return own + sum(len(getattr(torch_module, attr, {})) for attr in shared)


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a probe pass must not change (see lightning_explain.capture.guards)."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},  # weights and BatchNorm running stats
        "grads": {n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": _hooks(model),
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any], name: str) -> None:
    after = _snapshot(model)
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{name} changed {key}"
    for key, (tensor, values) in before["grads"].items():
        grad = dict(model.named_parameters())[key].grad
        assert grad is tensor, f"{name} replaced {key}.grad"
        assert values is None or torch.equal(grad, values), f"{name} changed {key}.grad"
    assert after["requires_grad"] == before["requires_grad"], name
    assert after["training"] == before["training"], name
    assert after["hooks"] == before["hooks"], f"{name} left hooks behind"
    assert torch.equal(after["rng"][0], before["rng"][0]), f"{name} drew from the global torch RNG"
    assert np.array_equal(after["rng"][1], before["rng"][1]) and after["rng"][2] == before["rng"][2], name


def check_method(name: str, model: nn.Module, layer: str | None, options: dict[str, Any] | None = None) -> Tensor:
    """One method through ``explain``: its map's shape and range, and nothing about the model changed."""
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    before, x_before = _snapshot(model), x.clone()
    out = explain(model, x, layer, (name,), options={name: options} if options else None)
    assert_unchanged(model, before, name)
    assert torch.equal(x, x_before), f"{name} changed the input"
    assert list(out) == [name]
    maps = out[name]
    assert maps.dtype == torch.float32 and not maps.requires_grad
    assert maps.dim() in (3, 4) and maps.shape[0] == BATCH and maps.shape[-2:] == (SIZE, SIZE), (name, maps.shape)
    assert torch.isfinite(maps).all(), name
    assert maps.amin() >= 0 and maps.amax() <= 1, name  # normalised
    assert out.logits.shape == (BATCH, 3) and out.targets.shape == (BATCH,)
    return maps


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_gives_finite_maps_and_leaves_the_model_as_it_was(name, models):
    model, layer = _model_for(name, models)
    maps = check_method(name, model, layer, FAST.get(name))
    assert maps.amax() > 0, f"{name} gave an all-zero map on a model with random weights"


@pytest.mark.parametrize("name", [m for m in METHODS if METHOD_OPTIONS.get(m)])
def test_every_option_in_the_signature_is_accepted_and_passed_on(name, models):
    """All options at their signature defaults at once: accepted, and the same map as no options at all."""
    spec = method_spec(name)
    assert spec is not None
    model, layer = _model_for(name, models)
    x = torch.rand(1, 3, SIZE, SIZE)
    plain = explain(model, x, layer, (name,))[name]
    given = explain(model, x, layer, (name,), options={name: dict(spec.option_defaults)})[name]
    torch.testing.assert_close(given, plain, rtol=0, atol=0)
    ExplainCallback(
        CNN_LAYER if spec.needs_layer else None, methods=(name,), method_options={name: spec.option_defaults}
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_an_unknown_option_is_rejected_naming_the_allowed_ones(name, models):
    model, layer = _model_for(name, models)
    x = torch.rand(1, 3, SIZE, SIZE)
    allowed = sorted(METHOD_OPTIONS.get(name, ()))
    message = rf"unknown options \['no_such_option'\] for '{name}'; allowed: " if allowed else "options are for"
    with pytest.raises(ValueError, match=message):
        explain(model, x, layer, (name,), options={name: {"no_such_option": 1}})
    schedule = ["every_n_epochs", "max_images"]
    with pytest.raises(ValueError, match=rf"allowed: {sorted(schedule + allowed)}".replace("[", r"\[")):
        ExplainCallback(methods=(name,), method_options={name: {"no_such_option": 1}})


@pytest.mark.parametrize("spec", registered_methods(), ids=lambda spec: spec.name)
def test_method_options_are_the_keyword_arguments_of_the_declared_function(spec):
    function = spec.options_from or spec.compute
    parameters = inspect.signature(function).parameters
    keyword = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
    assert set(METHOD_OPTIONS.get(spec.name, ())) == keyword - spec.engine_args
    assert spec.engine_args <= set(parameters) | {"output_transform"}, "engine_args names a parameter that is gone"
    for option, default in spec.option_defaults.items():
        assert parameters[option].default is default or parameters[option].default == default


def test_the_tables_are_views_of_the_specs():
    specs = registered_methods()
    assert tuple(METHODS) == tuple(spec.name for spec in specs)
    assert len(set(METHODS)) == len(METHODS)
    assert set(EXPENSIVE_METHODS) == {s.name for s in specs if s.own_passes}
    assert set(LAYER_METHODS) == {s.name for s in specs if "layer" in s.reads}
    assert set(ATTENTION_METHODS) == {s.name for s in specs if "attention" in s.reads}
    assert set(PIXEL_METHODS) == {s.name for s in specs if s.own_passes or "input_grad" in s.reads}
    assert dict(METHOD_OPTIONS) == {s.name: s.options for s in specs if s.options}
    for spec in specs:
        for alias in spec.aliases:
            assert canonical_methods([alias]) == (spec.name,)


@pytest.mark.parametrize("spec", registered_methods(), ids=lambda spec: spec.name)
def test_every_built_in_method_has_its_public_function(spec):
    assert spec.function is not None, f"{spec.name} names no public function"
    assert spec.function in F.__all__ and callable(getattr(F, spec.function)), spec.function


# ----------------------------------------------------------------------------------------------- a method added


def _input_energy(ctx: MethodContext, *, power: float = 2.0) -> Tensor:
    """A toy one-pass method: ``sum_c |dS/dx|^power`` from the shared pass's input gradient."""
    return ctx.input_grad.abs().pow(power).sum(dim=1)


def _flipped_saliency(ctx: MethodContext, *, flip: bool = True) -> Tensor:
    """A toy method with a pass of its own: saliency of the mirrored image, mirrored back."""
    x = ctx.inputs.flip(-1) if flip else ctx.inputs
    passed = hooked_pass(ctx.model, x, ctx.target, grad_input=True, output_transform=ctx.output_transform)
    assert passed.input_grad is not None
    grad = passed.input_grad.abs().amax(dim=1)
    return grad.flip(-1) if flip else grad


@pytest.fixture
def toys() -> Iterator[tuple[MethodSpec, MethodSpec]]:
    energy = register_method(
        MethodSpec("input_energy", _input_energy, reads=frozenset({"input_grad"}), aliases=("energy",))
    )
    flipped = register_method(MethodSpec("flipped_saliency", _flipped_saliency, own_passes=True))
    try:
        yield energy, flipped
    finally:
        unregister_method("input_energy")
        unregister_method("flipped_saliency")
    assert "input_energy" not in METHODS and "energy" not in METHOD_OPTIONS


def test_a_registered_method_appears_in_every_table_at_once(toys):
    assert {"input_energy", "flipped_saliency"} <= set(METHODS) and METHODS[-1] == "flipped_saliency"
    assert canonical_methods(["energy", "input_energy"]) == ("input_energy",)
    assert METHOD_OPTIONS["input_energy"] == {"power"} and METHOD_OPTIONS["flipped_saliency"] == {"flip"}
    assert "flipped_saliency" in EXPENSIVE_METHODS and "input_energy" not in EXPENSIVE_METHODS
    assert {"input_energy", "flipped_saliency"} <= PIXEL_METHODS.intersection(METHODS)
    assert "input_energy" not in LAYER_METHODS
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("gradcam", _input_energy))
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("other", _input_energy, aliases=("energy",)))


def test_a_registered_method_passes_the_every_method_checks(toys, models):
    for spec in toys:
        check_method(spec.name, models["cnn"], None, {"power": 1.0} if spec.name == "input_energy" else None)


def test_a_registered_method_shares_the_one_hooked_pass(toys):
    model = TinyCNN().eval()
    x = torch.rand(BATCH, 3, SIZE, SIZE)
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        out = explain(model, x, None, ("saliency", "energy"), options={"energy": {"power": 1.0}})
    finally:
        handle.remove()
    assert calls == [BATCH]  # saliency and the toy method from ONE forward
    x_grad = x.clone().requires_grad_()
    logits = model(x_grad)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), x_grad)
    torch.testing.assert_close(out["input_energy"], normalize_maps(grad.abs().sum(dim=1)))
    torch.testing.assert_close(out["saliency"], normalize_maps(grad.abs().amax(dim=1)))
    classes = torch.tensor([0, 2])
    mirrored = explain(model, x.flip(-1), None, ("saliency",), classes)["saliency"].flip(-1)
    flipped = explain(model, x, None, ("flipped_saliency",), classes)["flipped_saliency"]
    torch.testing.assert_close(flipped, mirrored)


def test_a_registered_method_works_in_the_callback_with_its_options_checked(toys, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown keys \['powr'\]; allowed: \['every_n_epochs', 'max_images', 'power'"
    ):
        ExplainCallback(methods=("energy",), method_options={"energy": {"powr": 1.0}})
    cb = ExplainCallback(
        methods=("input_energy", "flipped_saliency"),
        num_probe=5,
        method_options={"energy": {"power": 1.0}, "flipped_saliency": {"flip": False}},
        strict=True,
    )
    t = trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path)), callbacks=[cb], max_epochs=1)
    t.fit(TinyCNN(), *loaders())
    images = read_event_images(t.logger.log_dir)
    assert {"explain/input_energy", "explain/flipped_saliency"} <= set(images)
    heights = {tag: events[0][1].shape[0] for tag, events in images.items()}
    assert heights["explain/flipped_saliency"] < heights["explain/input_energy"]  # expensive: 4 probe images of 5


def test_a_spec_with_a_bad_declaration_fails_when_it_is_made():
    with pytest.raises(ValueError, match="unknown reads"):
        MethodSpec("bad", _input_energy, reads=frozenset({"gradient"}))
    with pytest.raises(ValueError, match="needs 'layer'"):
        MethodSpec("bad", _input_energy, reads=frozenset({"layer_grad"}))
    with pytest.raises(ValueError, match="identifier"):
        MethodSpec("bad name", _input_energy)
    with pytest.raises(RuntimeError, match="did not record 'layer'"):
        register_method(MethodSpec("needs_layer_undeclared", lambda ctx: ctx.activation, reads=frozenset()))
        try:
            explain(TinyCNN().eval(), torch.rand(1, 3, SIZE, SIZE), None, ("needs_layer_undeclared",))
        finally:
            unregister_method("needs_layer_undeclared")
