"""How a method is declared: one :class:`MethodSpec` next to its math, collected by :func:`register_method`.

A spec says everything the rest of the package needs to know about a method: its name and aliases, what it reads
from the ONE shared hooked pass (:func:`~lightning_explain.functional.hooked_pass.hooked_pass`: the layer's output,
its gradient, the input gradient, the attention weights and their gradients), whether it runs passes of its own
(then it is one of the expensive methods), how its raw result becomes a ``[B, H, W]`` map, and which options it
takes, read from a function's signature so that they cannot drift from it. The engine
(:func:`~lightning_explain.functional.explain`) asks the shared pass for the union of what the requested methods
read and then calls each spec's ``compute``; the registry's tables (``METHODS``, ``LAYER_METHODS``,
``METHOD_OPTIONS`` ...) are views of the registered specs. No Lightning import.

Example:
    >>> import torch
    >>> spec = MethodSpec(
    ...     "input_energy",
    ...     compute=lambda ctx, *, power=2.0: ctx.input_grad.abs().pow(power).sum(dim=1),
    ...     reads=frozenset({"input_grad"}),
    ... )
    >>> spec.options, spec.needs_layer, spec.own_passes, spec.pixels
    (frozenset({'power'}), False, False, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from torch import Tensor, nn

from lightning_explain.functional.hooked_pass import PassResult
from lightning_explain.functional.targets import OutputTransform, TargetSpec
from lightning_explain.functional.vit_layouts import ViTLayout

if TYPE_CHECKING:
    from lightning_explain.functional.attention_fold import AttentionFold

__all__ = [
    "READS",
    "MethodContext",
    "MethodNames",
    "MethodOptions",
    "MethodSpec",
    "Read",
    "method_spec",
    "register_method",
    "registered_methods",
    "unregister_method",
]

Read = Literal["layer", "layer_grad", "input_grad", "attention", "attention_grad"]
#: What a method can read from the shared hooked pass.
READS: tuple[str, ...] = ("layer", "layer_grad", "input_grad", "attention", "attention_grad")


@dataclass
class MethodContext:
    """What a spec's ``compute`` gets: the model, the shared pass's results, the targets, and room for side outputs.

    The properties raise when the method did not declare the read in its spec (the pass did not record it).

    Attributes:
        model: the model being explained (its train/eval mode as the caller left it).
        inputs: the images as fed to the model in the shared pass (detached, the model's dtype).
        passed: the shared pass's :class:`~lightning_explain.functional.hooked_pass.PassResult`.
        target: what to explain per image, for passes of the method's own (``target.scores(logits, rows)``).
        output_transform: maps the model's output to ``[B, C]`` logits (pass it on to the method's own passes).
        top_k: the number of channels ``explain`` was asked for (``activations``).
        vit: the ViT layout when the model is a supported vision transformer.
        views: side maps by name (``attention_heads``...), finished like the method's own map.
        extras: side tensors by name (``activation_channels``), returned as they are.
        attention_fold: the pass's :class:`~lightning_explain.functional.attention_fold.AttentionFold` when
            ``explain`` folded the attention as each layer ran (the attention methods read it; no layer's full
            attention is kept), else None (the methods read ``attentions`` / ``attention_grads``).
    """

    model: nn.Module
    inputs: Tensor
    passed: PassResult
    target: TargetSpec
    output_transform: OutputTransform = None
    top_k: int = 3
    vit: ViTLayout | None = None
    layer_output: Tensor | None = None
    layer_output_grad: Tensor | None = None
    views: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)
    attention_fold: AttentionFold | None = None
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def activation(self) -> Tensor:
        """The layer's output read as ``[B, K, h, w]`` fp32 (spec ``reads`` ``"layer"``)."""
        return _need(self.layer_output, "layer")

    @property
    def layer_grad(self) -> Tensor:
        """``dS/d activation``, ``[B, K, h, w]`` fp32 (spec ``reads`` ``"layer_grad"``)."""
        return _need(self.layer_output_grad, "layer_grad")

    @property
    def input_grad(self) -> Tensor:
        """``dS/d inputs`` fp32, the shape of ``inputs`` (spec ``reads`` ``"input_grad"``)."""
        return _need(self.passed.input_grad, "input_grad").float()

    @property
    def attentions(self) -> list[Tensor]:
        """Every block's attention ``[B, heads, T, T]`` fp32, in depth order (spec ``reads`` ``"attention"``)."""
        _need(self.vit if self.passed.attentions else None, "attention")
        return [a.float() for a in self.passed.attentions]

    @property
    def attention_grads(self) -> list[Tensor]:
        """``dS/dA`` per block, fp32 (spec ``reads`` ``"attention_grad"``)."""
        _need(self.vit if self.passed.attention_grads else None, "attention_grad")
        return [g.float() for g in self.passed.attention_grads]

    @property
    def layout(self) -> ViTLayout:
        """The ViT layout (spec ``reads`` ``"attention"``)."""
        return _need(self.vit, "attention")

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``explain`` call, shared by every method that asks for ``key`` (e.g. one guided
        backpropagation pass for both ``guided_backprop`` and ``guided_gradcam``)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


_T = TypeVar("_T")


def _need(value: _T | None, read: str) -> _T:
    if value is None:
        raise RuntimeError(f"the shared pass did not record {read!r}: add {read!r} to the method spec's reads.")
    return value


@dataclass(frozen=True)
class MethodSpec:
    """One method, declared once, next to its math.

    Args:
        name: the name in ``explain(methods=...)`` and ``ExplainCallback(methods=...)``, and the map's tag.
        compute: ``compute(ctx, **options) -> Tensor``: the raw result from a :class:`MethodContext`; ``[B, h, w]``
            (or ``[B, k, h, w]``), or anything ``post`` turns into that.
        reads: what it takes from the shared hooked pass (a subset of :data:`READS`): ``"layer"`` makes it a layer
            method (it gets the target layer), ``"attention"`` an attention method (ViTs only).
        own_passes: it runs passes of its own (perturbed images, a modified backward...): one of the expensive
            methods, computed after the shared pass with gradients enabled, on at most ``max_images`` probe images
            in the callback.
        at_layer: the map is at the layer's (or the patch grid's) resolution and is upsampled to the input's.
        post: turns ``compute``'s result into the map (e.g. ``|.|``, max over colour channels) before upsampling
            and normalisation; None keeps it.
        aliases: other names accepted for it.
        options_from: the function whose keyword-only parameters with a default are the method's options
            (``explain(options={name: {...}})``, the callback's ``method_options``); None: ``compute`` itself.
        engine_args: keyword-only parameters of ``options_from`` that are not options (the engine passes them, or
            they do not fit in a YAML config).
        default: computed when no methods are named (``DEFAULT_METHODS``).
        function: the name of its public function in :mod:`lightning_explain.functional` (a test checks it
            exists for every built-in method).
    """

    name: str
    compute: Callable[..., Tensor]
    reads: frozenset[str] = frozenset()
    own_passes: bool = False
    at_layer: bool = False
    post: Callable[[Tensor], Tensor] | None = None
    aliases: tuple[str, ...] = ()
    options_from: Callable[..., Any] | None = None
    engine_args: frozenset[str] = frozenset({"output_transform"})
    default: bool = False
    function: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"a method name must be an identifier (it becomes a tag); got {self.name!r}.")
        unknown = sorted(set(self.reads) - set(READS))
        if unknown:
            raise ValueError(f"MethodSpec {self.name!r}: unknown reads {unknown}; choose from {list(READS)}.")
        if "layer_grad" in self.reads and "layer" not in self.reads:
            raise ValueError(f"MethodSpec {self.name!r}: reading 'layer_grad' needs 'layer' in reads too.")
        if "attention_grad" in self.reads and "attention" not in self.reads:
            raise ValueError(f"MethodSpec {self.name!r}: reading 'attention_grad' needs 'attention' in reads too.")

    @property
    def needs_layer(self) -> bool:
        """Whether it reads the target layer (``LAYER_METHODS``)."""
        return "layer" in self.reads

    @property
    def attention(self) -> bool:
        """Whether it reads a ViT's attention weights (``ATTENTION_METHODS``)."""
        return "attention" in self.reads

    @property
    def pixels(self) -> bool:
        """Whether it differentiates or perturbs the image itself, so it needs floating-point images."""
        return self.own_passes or "input_grad" in self.reads

    @cached_property
    def option_defaults(self) -> dict[str, Any]:
        """Each option and its default, read from the signature of ``options_from`` (or ``compute``)."""
        function = self.options_from or self.compute
        return {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is not inspect.Parameter.empty
            and name not in self.engine_args
        }

    @property
    def options(self) -> frozenset[str]:
        """The options it takes (``METHOD_OPTIONS[name]``)."""
        return frozenset(self.option_defaults)

    def run(self, ctx: MethodContext, options: Mapping[str, Any]) -> Tensor:
        """``post(compute(ctx, **options))``: the map before upsampling and normalisation."""
        raw = self.compute(ctx, **options)
        return self.post(raw) if self.post is not None else raw


_SPECS: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the methods :func:`~lightning_explain.functional.explain` and the callbacks accept.

    Every table of the registry (``METHODS``, ``LAYER_METHODS``, ``METHOD_OPTIONS`` ...) sees it at once.

    Raises:
        ValueError: the name or an alias is taken (unless ``replace``), or an option's default is missing.
    """
    names = (spec.name, *spec.aliases)
    old = _SPECS.get(spec.name)
    taken = [n for n in names if (n in _SPECS or n in _ALIASES) and not (replace and _owner(n) == spec.name)]
    if taken:
        raise ValueError(f"method names {taken} are already registered; choose another name or pass replace=True.")
    if old is not None:
        unregister_method(old.name)
    spec.option_defaults  # noqa: B018 - read the signature now: a bad one fails at registration, not at use
    _SPECS[spec.name] = spec
    _ALIASES.update(dict.fromkeys(spec.aliases, spec.name))
    return spec


def _owner(name: str) -> str | None:
    return name if name in _SPECS else _ALIASES.get(name)


def unregister_method(name: str) -> MethodSpec:
    """Remove a method (by name or alias) and its aliases; returns its spec."""
    owner = _owner(name)
    if owner is None:
        raise KeyError(f"no method {name!r} is registered.")
    spec = _SPECS.pop(owner)
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)
    return spec


def registered_methods() -> tuple[MethodSpec, ...]:
    """Every registered spec, in registration order."""
    return tuple(_SPECS.values())


def method_spec(name: str) -> MethodSpec | None:
    """The spec of ``name`` (an alias is accepted), or None."""
    owner = _owner(name)
    return _SPECS[owner] if owner is not None else None


class MethodNames(Sequence[str], Set[str]):
    """The names of the registered methods that satisfy ``where``, in registration order; always up to date.

    Reads like a tuple (``in``, iteration, indexing, ``len``, ``==`` a tuple) and like a frozenset (``&``, ``|``,
    ``-``, ``.intersection``, ``==`` a set).
    """

    def __init__(self, where: Callable[[MethodSpec], bool]) -> None:
        self._where = where

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, spec in _SPECS.items() if self._where(spec))

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        spec = _SPECS.get(name) if isinstance(name, str) else None
        return spec is not None and self._where(spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Set):
            return frozenset(self) == frozenset(other)
        if isinstance(other, Sequence):
            return self._names() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def _from_iterable(cls, names: Iterable[Any]) -> Set[Any]:  # what &, |, - return
        return frozenset(names)

    def intersection(self, *others: Any) -> frozenset[str]:
        """As :meth:`frozenset.intersection`."""
        return frozenset(self).intersection(*others)

    def union(self, *others: Any) -> frozenset[str]:
        """As :meth:`frozenset.union`."""
        return frozenset(self).union(*others)

    def difference(self, *others: Any) -> frozenset[str]:
        """As :meth:`frozenset.difference`."""
        return frozenset(self).difference(*others)

    def __repr__(self) -> str:
        return repr(self._names())


class MethodOptions(Mapping[str, frozenset[str]]):
    """Method name -> the options it takes, for every registered method that takes any; always up to date."""

    def __getitem__(self, name: str) -> frozenset[str]:
        spec = _SPECS.get(name)
        if spec is None or not spec.options:
            raise KeyError(name)
        return spec.options

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, spec in _SPECS.items() if spec.options])

    def __len__(self) -> int:
        return sum(1 for spec in _SPECS.values() if spec.options)

    def __repr__(self) -> str:
        return repr(dict(self))
