"""Layers of one pass: find a layer by name, record its output, end a forward after it.

Every hook here is scoped: it lives for the ``with`` block (one forward pass) and is removed in ``finally``,
also when the pass raises.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = [
    "LayerRecording",
    "ModuleCall",
    "StopForward",
    "default_conv_layer",
    "is_fully_sharded",
    "record_conv_grids",
    "record_layer",
    "record_outputs",
    "resolve_layer",
    "stop_after",
]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by name or by module.

    A model or submodule wrapped by ``torch.compile`` is found under the name without ``_orig_mod``
    (``"layer4"`` finds ``"_orig_mod.layer4"``).

    Raises:
        ValueError: the name does not exist in ``model`` (the message lists the closest names), or the
            module is not a submodule of ``model``.

    Example:
        >>> import torchvision
        >>> name, module = resolve_layer(torchvision.models.resnet18(), "layer4")
        >>> name
        'layer4'
    """
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise ValueError(
            f"target_layer is a {type(layer).__name__} module that is not part of the model "
            f"({type(model).__name__}). Pass a submodule of the model or its dotted name."
        )
    if not isinstance(layer, str):
        raise TypeError(f"target_layer must be a dotted module name or an nn.Module, got {type(layer).__name__}.")
    if layer in named and layer != "":
        return layer, named[layer]
    # torch.compile wraps a module as ``<name>._orig_mod``: accept the name the user knows, without it.
    uncompiled = {".".join(p for p in n.split(".") if p != "_orig_mod"): n for n in named if "_orig_mod" in n}
    if layer in uncompiled:
        return uncompiled[layer], named[uncompiled[layer]]
    candidates = [n for n in named if n]
    close = difflib.get_close_matches(layer, candidates, n=5, cutoff=0.5)
    if not close:
        conv_names = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
        close = conv_names[-5:]
    hint = ", ".join(repr(c) for c in close) if close else "(the model has no named submodules)"
    raise ValueError(
        f"target_layer {layer!r} does not exist in {type(model).__name__}. Closest existing names: {hint}. "
        "Use a dotted name from model.named_modules(), or target_layer=None for the default layer."
    )


def default_conv_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The last ``nn.Conv2d`` in registration order: the usual Grad-CAM layer of a CNN.

    Raises:
        ValueError: the model has no ``Conv2d``.
    """
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last = (name, module)
    if last is None:
        raise ValueError(
            f"target_layer=None picks the last nn.Conv2d, but {type(model).__name__} has none. "
            "Pass target_layer='<dotted name>' of a layer that outputs [B, C, H, W] feature maps."
        )
    return last


@dataclass
class LayerRecording:
    """What a forward hook saw during one pass: the layer's output tensors, in call order."""

    name: str
    outputs: list[Any] = field(default_factory=list)

    def last_tensor(self) -> Tensor:
        """The layer's output of its last call, whatever its shape.

        Raises:
            ValueError: the layer was not called, or returned something other than a tensor.
        """
        if not self.outputs or not isinstance(self.outputs[-1], Tensor):
            raise ValueError(
                f"layer {self.name!r} was not called, or does not return a tensor, in the model's forward()."
            )
        out: Tensor = self.outputs[-1]
        return out

    def feature_map(self, tokens: bool = False) -> Tensor:
        """The layer's output of its last call: ``[B, C, H, W]``, or with ``tokens`` also ``[B, T, C]``."""
        if not self.outputs:
            raise RuntimeError(
                f"target_layer {self.name!r} was not called during the forward pass; pick a layer that the "
                "model's forward() uses."
            )
        out = self.outputs[-1]
        if not isinstance(out, Tensor) or not (out.ndim == 4 or (tokens and out.ndim == 3)):
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            wanted = "a 4-D [B, C, H, W] feature map" + (" ([B, H, W, C] too) or [B, T, C] tokens" if tokens else "")
            raise ValueError(
                f"target_layer {self.name!r} outputs {shape}; Grad-CAM and channel activations need {wanted}. "
                "Choose a convolutional layer (e.g. the last conv block) or a transformer block, or "
                "target_layer=None for the default layer."
            )
        return out


@contextmanager
def record_layer(module: nn.Module, name: str, *, protect_from_inplace: bool = True) -> Iterator[LayerRecording]:
    """Record ``module``'s outputs for the duration of the ``with`` block; the hook is removed in ``finally``.

    With ``protect_from_inplace`` the hook hands the rest of the network a clone of the output, so an
    in-place operation after the layer (``ReLU(inplace=True)``) cannot overwrite the recorded tensor; the
    recorded tensor stays in the autograd graph, so ``torch.autograd.grad`` can differentiate with
    respect to it.
    """
    recording = LayerRecording(name)

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        recording.outputs.append(output)
        if protect_from_inplace and isinstance(output, Tensor):
            return output.clone()
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield recording
    finally:
        handle.remove()


class StopForward(Exception):
    """Raised by :func:`stop_after`'s hook to end a forward pass once a layer has produced its output."""


def is_fully_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds FSDP2 (``fully_shard``) modules: their post-forward hooks reshard the parameters and
    end the forward state, so a forward of such a model must run to the end."""
    return any(hasattr(m, "_get_fsdp_state") for m in model.modules())


@contextmanager
def stop_after(module: nn.Module, model: nn.Module | None = None) -> Iterator[None]:
    """Within the block, a forward pass raises :class:`StopForward` right after ``module`` runs (hook removed in
    ``finally``). Register it after any recording hook on the same module, and catch ``StopForward`` around the
    call: the rest of the network is not run, which saves its cost when only the layer's output is needed.

    When ``model`` (the network ``module`` belongs to) is sharded by FSDP2 (:func:`is_fully_sharded`), nothing is
    cut short: a forward that stopped inside it would leave its parameters gathered and its state mid-forward, and
    the next training step would run on that.
    """

    def hook(_module: nn.Module, _args: Any, _output: Any) -> None:
        raise StopForward

    if model is not None and is_fully_sharded(model):
        yield
        return
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record_conv_grids(model: nn.Module) -> Iterator[set[tuple[int, int]]]:
    """Collect the ``(H, W)`` grid of every ``Conv2d`` output during the block (shapes only; hooks removed in
    ``finally``). A convolution's output is channels-first by definition, so these grids are ones the model
    really produces (a patch embedding of stride 14 gives 16 x 16 on 224 px)."""
    grids: set[tuple[int, int]] = set()

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.ndim == 4:
            grids.add((int(output.shape[-2]), int(output.shape[-1])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        yield grids
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ModuleCall:
    """One module's finished call in a pass: its name, the module, its output's shape (None if not a tensor) and
    the identity of the output object (a container returns its last child's output: the same object)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    output_id: int = 0


@contextmanager
def record_outputs(model: nn.Module) -> Iterator[list[ModuleCall]]:
    """Record, in the order the calls finish, every submodule's output shape during the block (hooks removed in
    ``finally``). A parent finishes after its children, so the list ends with the modules nearest the output."""
    calls: list[ModuleCall] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: nn.Module, _args: Any, output: Any, name: str = name) -> None:
            shape = tuple(int(d) for d in output.shape) if isinstance(output, Tensor) else None
            calls.append(ModuleCall(name, mod, shape, id(output)))

        handles.append(module.register_forward_hook(hook))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
