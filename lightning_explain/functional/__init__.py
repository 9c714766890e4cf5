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
    DEFAULT_METHODS,
    EXPENSIVE_METHODS,
    METHOD_OPTIONS,
    METHODS,
    channel_activations,
    eigen_cam,
    explain,
    grad_cam,
    grad_cam_plus_plus,
    gradient_x_input,
    hires_cam,
    integrated_gradients,
    layer_cam,
    occlusion,
    saliency,
    score_cam,
    smooth_grad,
    xgrad_cam,
)

__all__ = [
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "channel_activations",
    "eigen_cam",
    "explain",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradient_x_input",
    "hires_cam",
    "integrated_gradients",
    "layer_cam",
    "normalize_maps",
    "occlusion",
    "saliency",
    "score_cam",
    "smooth_grad",
    "upsample_maps",
    "xgrad_cam",
]
