"""Hooks for one pass, and the guard that makes a probe pass invisible to training.

- :mod:`~lightning_explain.capture.layers`: find a layer by name, record its output, stop a forward after it.
- :mod:`~lightning_explain.capture.attention`: record a Vision Transformer's attention weights.
- :mod:`~lightning_explain.capture.guards`: restore train/eval and ``requires_grad`` flags, ``.grad`` and RNG states.

Everything here is scoped to a ``with`` block and restored in ``finally``, also when the pass raises.
"""

from lightning_explain.capture.attention import capture_attention, select_layers
from lightning_explain.capture.guards import preserve_model_state, preserve_rng
from lightning_explain.capture.layers import (
    LayerRecording,
    ModuleCall,
    StopForward,
    default_conv_layer,
    is_fully_sharded,
    record_conv_grids,
    record_layer,
    record_outputs,
    resolve_layer,
    stop_after,
)

__all__ = [
    "LayerRecording",
    "ModuleCall",
    "StopForward",
    "capture_attention",
    "default_conv_layer",
    "is_fully_sharded",
    "preserve_model_state",
    "preserve_rng",
    "record_conv_grids",
    "record_layer",
    "record_outputs",
    "resolve_layer",
    "select_layers",
    "stop_after",
]
