"""Pure tensor functions behind the callbacks. Nothing here imports Lightning.

Example:
    >>> import torch, torchvision
    >>> from lightning_explain.functional import explain
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> maps = explain(model, torch.rand(2, 3, 64, 64), "layer4")
    >>> sorted(k for k in maps if k in ("gradcam", "saliency", "activations"))
    ['activations', 'gradcam', 'saliency']
"""

from lightning_explain.functional._common import normalize_maps, upsample_maps
from lightning_explain.functional.gradients import (
    METHODS,
    channel_activations,
    explain,
    grad_cam,
    saliency,
)

__all__ = [
    "METHODS",
    "channel_activations",
    "explain",
    "grad_cam",
    "normalize_maps",
    "saliency",
    "upsample_maps",
]
