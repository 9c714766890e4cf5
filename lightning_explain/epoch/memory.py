"""The memory guard: explain the probe in chunks when its views would not fit, and retry a view that runs out.

Before the first explained epoch, the callback's dry run (two probe images, the one-pass methods) records the size
of every tensor the model's modules produce (:func:`record_activation_bytes`); :meth:`MemoryGuard.plan` turns that
into an estimate for the whole probe and, when it exceeds ``fraction`` of the accelerator's free memory, splits the
probe into chunks of as many images as fit (:func:`explain_in_chunks` then runs one ``explain`` call per chunk and
concatenates the results: every map is per image, so the maps are the same). A ``torch.OutOfMemoryError`` inside
a view is caught, the cache emptied and the view retried once in chunks of half the size; a second one propagates
(the callback then skips the view with the cause, and training continues).

The estimate: the pass keeps each module output for the backward and, in the backward, at most a gradient of the
same size: ``2 x`` the bytes of the distinct tensors the modules returned, per image. It covers the one-pass
methods (the CAMs, saliency, activations, the attention maps); the multi-pass methods run on a few images with
their own internal batches, and the out-of-memory retry covers them. On the CPU there is no free-memory figure to
compare with, so nothing is split (pass ``free_memory`` to simulate a budget).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain.functional.engine import ExplainResult

__all__ = [
    "ActivationBytes",
    "MemoryGuard",
    "concat_results",
    "explain_in_chunks",
    "free_accelerator_memory",
    "record_activation_bytes",
]

#: Free bytes of a device's memory, or None where there is no such figure (the CPU).
FreeMemory = Callable[[torch.device], "int | None"]


def free_accelerator_memory(device: torch.device) -> int | None:
    """``torch.cuda.mem_get_info``'s free bytes on a CUDA device; None elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


@dataclass
class ActivationBytes:
    """What :func:`record_activation_bytes` saw: the bytes of the distinct module outputs, and the batch size."""

    total: int = 0
    batch: int = 0
    _seen: set[int] = field(default_factory=set, repr=False)

    def add(self, output: Any) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        for tensor in tensors:
            if isinstance(tensor, Tensor) and tensor.untyped_storage().data_ptr() not in self._seen:
                self._seen.add(tensor.untyped_storage().data_ptr())  # in-place outputs (ReLU) count once
                self.total += tensor.numel() * tensor.element_size()
                if tensor.ndim:
                    self.batch = max(self.batch, int(tensor.shape[0]))

    @property
    def per_image(self) -> float:
        """Estimated peak bytes per probe image: ``2 x`` the module outputs (kept, and their gradients)."""
        return 2.0 * self.total / max(1, self.batch)


@contextmanager
def record_activation_bytes(model: nn.Module) -> Iterator[ActivationBytes]:
    """Count the bytes of every leaf module's output (and of each ``nn.MultiheadAttention``'s) during the block.

    Only sizes are kept, never the tensors; the hooks are removed in ``finally``.
    """
    seen = ActivationBytes()
    handles = [
        module.register_forward_hook(lambda _m, _a, output: seen.add(output))
        for module in model.modules()
        if not any(True for _ in module.children()) or isinstance(module, nn.MultiheadAttention)
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        seen._seen.clear()


@dataclass
class MemoryGuard:
    """Splits the probe when its views would not fit in ``fraction`` of the free accelerator memory.

    Args:
        fraction: the share of the free memory (at the first explained epoch) the views may take, in (0, 1].
        free_memory: the free bytes of a device (default :func:`free_accelerator_memory`; None: no guard there).
            Pass a function to simulate a budget, e.g. ``lambda device: 64 * 2**20``.

    Attributes:
        chunk: images per ``explain`` call (None: the whole probe in one call).

    Example:
        >>> guard = MemoryGuard(0.5, free_memory=lambda device: 100 * 2**20)  # 100 MiB free
        >>> message = guard.plan(per_image=20 * 2**20, images=16, device=torch.device("cpu"))
        >>> guard.chunk, message.split(":")[0]
        (2, 'the probe pass needs about 320.0 MiB for 16 images, more than 50% of the 100.0 MiB free on cpu')
    """

    fraction: float = 0.5
    free_memory: FreeMemory = free_accelerator_memory
    chunk: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"the memory guard's fraction must lie in (0, 1], got {self.fraction}.")

    def plan(self, per_image: float, images: int, device: torch.device) -> str | None:
        """Set :attr:`chunk` for a probe of ``images``; a message when it splits the probe, else None."""
        free = self.free_memory(device)
        if free is None or per_image <= 0 or images <= 1:
            return None
        budget = self.fraction * free
        need = per_image * images
        if need <= budget:
            self.chunk = None
            return None
        self.chunk = max(1, int(budget // per_image))
        return (
            f"the probe pass needs about {need / 2**20:.1f} MiB for {images} images, more than "
            f"{self.fraction:.0%} of the {free / 2**20:.1f} MiB free on {device}: explaining it in chunks of "
            f"{self.chunk} images (the maps are the same; pass memory_guard=False to turn this off)."
        )


def concat_results(results: Sequence[ExplainResult]) -> ExplainResult:
    """The results of consecutive chunks of the probe as one result (every per-image field concatenated)."""
    if len(results) == 1:
        return results[0]
    first = results[0]

    def cat(name: str) -> Tensor | None:
        values = [getattr(r, name) for r in results]
        return None if values[0] is None else torch.cat(values)

    logits, targets = cat("logits"), cat("targets")
    assert logits is not None and targets is not None
    return ExplainResult(
        maps={m: torch.cat([r.maps[m] for r in results]) for m in first.maps},
        logits=logits,
        targets=targets,
        activation_channels=cat("activation_channels"),
        attention_heads=cat("attention_heads"),
        attention_layers=cat("attention_layers"),
        predicted=cat("predicted"),
        layer=first.layer,
        layout=first.layout,
    )


def _in_chunks(compute: Callable[[int, int], ExplainResult], count: int, chunk: int) -> ExplainResult:
    return concat_results([compute(start, min(start + chunk, count)) for start in range(0, count, chunk)])


def explain_in_chunks(
    compute: Callable[[int, int], ExplainResult],
    count: int,
    guard: MemoryGuard,
    say: Callable[[str], None],
) -> ExplainResult:
    """``compute(start, stop)`` over ``count`` images in the guard's chunks; one retry in halves after an OOM.

    A ``torch.OutOfMemoryError`` empties the CUDA cache, calls ``say`` with what happens, and runs again in chunks of
    half the size (kept for the next epochs); a second one, or one with chunks of one image, propagates.
    """
    chunk = min(guard.chunk or count, count)
    try:
        return _in_chunks(compute, count, chunk)
    except torch.OutOfMemoryError as err:
        if chunk <= 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = max(1, chunk // 2)
        say(
            f"out of memory with {chunk} images per pass ({str(err).splitlines()[0][:200]}); retrying in chunks of "
            f"{half} images, and keeping that size."
        )
        guard.chunk = half
        return _in_chunks(compute, count, half)
