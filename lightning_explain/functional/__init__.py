"""Pure tensor functions behind the callbacks. Nothing here imports Lightning.

How the files divide the work, in the order data flows through them:

- ``spec``: how a method is declared (:class:`MethodSpec`, :func:`register_method`); ``registry``: the method
  names, their groups and options, read from the registered specs; ``target_layer``: the default layer, found by
  running the model; ``layouts``: how a layer's output reads as a grid (channels-first, channels-last, tokens);
  ``vit_layouts``: where a ViT keeps its tokens.
- ``targets``: logits and the score explained per image; ``context``: how a pass runs (grad on, autocast off).
- ``hooked_pass``: the ONE hooked forward + ``autograd.grad`` that every gradient method uses.
- ``engine``: :func:`explain`, every map from one pass, then each requested spec's ``compute``; ``cams`` (CAM
  weightings), ``rollout`` (attention
  math), ``input_gradients`` (SmoothGrad, Integrated Gradients), ``perturbation`` (Score-CAM, Occlusion),
  ``lime`` (LIME), ``guided`` (guided backpropagation, deconvnet, guided Grad-CAM) and ``lrp`` (LRP) hold each family's
  math; ``maps``: upsample and normalise.
- ``methods`` and ``vit``: one public function per method.
- ``metrics`` (focus and drift numbers), ``faithfulness`` (deletion/insertion AUC, ROAD), ``trust`` (randomisation
  sanity checks, sensitivity, sparseness, complexity, faithfulness correlation), ``tcav`` (concept
  sensitivity), ``inversion`` (feature inversion), ``activation_max`` (activation maximisation), ``feature_maps``
  and ``predictions`` (the other views' no-grad passes).

Example:
    >>> import torch, torchvision
    >>> from lightning_explain.functional import explain
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> maps = explain(model, torch.rand(2, 3, 64, 64), "layer4")
    >>> list(maps), maps.logits.shape
    (['gradcam', 'saliency', 'activations'], torch.Size([2, 10]))
"""

from lightning_explain.capture import capture_attention
from lightning_explain.functional.activation_max import ActivationMaxResult, count_units, maximize_activation
from lightning_explain.functional.engine import ExplainResult, explain
from lightning_explain.functional.guided import deconvnet, guided_backprop, guided_grad_cam, relu_rule
from lightning_explain.functional.hooked_pass import PassResult, hooked_pass
from lightning_explain.functional.inversion import InversionResult, invert_features, total_variation
from lightning_explain.functional.layouts import FeatureLayout, LayoutError, infer_layout
from lightning_explain.functional.lime import lime, superpixels
from lightning_explain.functional.lrp import lrp
from lightning_explain.functional.maps import normalize_maps, upsample_maps
from lightning_explain.functional.methods import (
    channel_activations,
    eigen_cam,
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
from lightning_explain.functional.registry import (
    ATTENTION_METHODS,
    DEFAULT_METHODS,
    EXPENSIVE_METHODS,
    LAYER_METHODS,
    METHOD_OPTIONS,
    METHODS,
    canonical_methods,
    check_options,
)
from lightning_explain.functional.rollout import attention_rollout, cls_attention, grad_rollout
from lightning_explain.functional.spec import (
    MethodContext,
    MethodSpec,
    method_spec,
    register_method,
    registered_methods,
    unregister_method,
)
from lightning_explain.functional.target_layer import LayerChoice, default_layer, locate_layer
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
from lightning_explain.functional.vit import token_grad_cam, vit_attention, vit_grad_rollout, vit_rollout
from lightning_explain.functional.vit_layouts import ViTLayout, default_token_layer, tokens_to_grid, vit_layout

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_METHODS",
    "EXPENSIVE_METHODS",
    "LAYER_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "ActivationMaxResult",
    "ExplainResult",
    "FeatureLayout",
    "InversionResult",
    "LayerChoice",
    "LayoutError",
    "MethodContext",
    "MethodSpec",
    "PassResult",
    "TCAVScores",
    "ViTLayout",
    "attention_rollout",
    "canonical_methods",
    "capture_attention",
    "channel_activations",
    "check_options",
    "cls_attention",
    "count_units",
    "deconvnet",
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
    "guided_backprop",
    "guided_grad_cam",
    "hires_cam",
    "hooked_pass",
    "infer_layout",
    "integrated_gradients",
    "invert_features",
    "layer_activations",
    "layer_cam",
    "layer_gradients",
    "lime",
    "locate_layer",
    "lrp",
    "maximize_activation",
    "method_spec",
    "normalize_maps",
    "occlusion",
    "register_method",
    "registered_methods",
    "relu_rule",
    "saliency",
    "score_cam",
    "smooth_grad",
    "superpixels",
    "t_test",
    "tcav",
    "tcav_score",
    "token_grad_cam",
    "tokens_to_grid",
    "total_variation",
    "unregister_method",
    "upsample_maps",
    "vit_attention",
    "vit_grad_rollout",
    "vit_layout",
    "vit_rollout",
    "xgrad_cam",
]
