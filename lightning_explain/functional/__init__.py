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
from lightning_explain.functional.attention import (
    ViTLayout,
    attention_rollout,
    capture_attention,
    cls_attention,
    default_token_layer,
    grad_rollout,
    token_grad_cam,
    tokens_to_grid,
    vit_attention,
    vit_grad_rollout,
    vit_layout,
    vit_rollout,
)
from lightning_explain.functional.gradients import (
    ATTENTION_METHODS,
    DEFAULT_METHODS,
    EXPENSIVE_METHODS,
    METHOD_OPTIONS,
    METHODS,
    channel_activations,
    default_layer,
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
from lightning_explain.functional.inversion import InversionResult, invert_features, total_variation
from lightning_explain.functional.tcav import (
    TCAVScores,
    directional_derivatives,
    fit_cav,
    layer_activations,
    layer_gradients,
    t_test,
    tcav,
    tcav_score,
)

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "InversionResult",
    "TCAVScores",
    "ViTLayout",
    "attention_rollout",
    "capture_attention",
    "channel_activations",
    "cls_attention",
    "default_layer",
    "default_token_layer",
    "directional_derivatives",
    "eigen_cam",
    "explain",
    "fit_cav",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_rollout",
    "gradient_x_input",
    "hires_cam",
    "integrated_gradients",
    "invert_features",
    "layer_activations",
    "layer_cam",
    "layer_gradients",
    "normalize_maps",
    "occlusion",
    "saliency",
    "score_cam",
    "smooth_grad",
    "t_test",
    "tcav",
    "tcav_score",
    "token_grad_cam",
    "tokens_to_grid",
    "total_variation",
    "upsample_maps",
    "vit_attention",
    "vit_grad_rollout",
    "vit_layout",
    "vit_rollout",
    "xgrad_cam",
]
