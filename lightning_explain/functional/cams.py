"""The CAM family from one layer's activations ``A`` ``[B, K, h, w]`` and gradients ``G = dS/dA``.

Every variant is ``ReLU(sum_k w_k A_k)`` with its own channel weights ``w`` ``[B, K]``, except LayerCAM and
HiResCAM, which weight each position (``[B, K, h, w]`` weights), and EigenCAM, which needs no gradient.
Pure tensor functions at the layer's resolution; upsampling and normalisation happen elsewhere.

- Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_ij G_kij``.
- Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential score): ``w_k = sum_ij a_kij ReLU(G_kij)``,
  ``a = G^2 / (2 G^2 + sum_ij(A_k) G^3)`` (0 where ``G = 0``).
- XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij G_kij A_kij / sum_ij A_kij``.
- LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)`` (position-wise weights).
- HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k G_k * A_k)`` (position-wise, signed gradient).
- EigenCAM (Muhammad & Yeasin 2020): the projection of the centred activations ``[hw, K]`` on their first
  principal direction, signed so that it correlates positively with the mean activation, then ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_explain.functional.spec import MethodContext, MethodSpec

__all__ = ["CAM_METHODS", "GRADIENT_CAMS", "SPECS", "cam_from_gradients", "cam_from_weights", "eigen_projection"]

_EPS_PP = 1e-6
_EPS_X = 1e-7


def _gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    return gradients.mean(dim=(2, 3))


def _gradcam_pp(activations: Tensor, gradients: Tensor) -> Tensor:
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + _EPS_PP)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (alpha * torch.relu(gradients)).sum(dim=(2, 3))


def _xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    total = activations.sum(dim=(2, 3), keepdim=True)
    return (gradients * activations / (total + _EPS_X)).sum(dim=(2, 3))


#: Channel-weight functions ``(A, G) -> w [B, K]``.
_CHANNEL_WEIGHTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": _gradcam,
    "gradcampp": _gradcam_pp,
    "xgradcam": _xgradcam,
}
#: Position-wise weight functions ``(A, G) -> W [B, K, h, w]``.
_POSITION_WEIGHTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "layercam": lambda a, g: torch.relu(g),
    "hirescam": lambda a, g: g,
}

#: CAM variants that need the layer's gradient.
GRADIENT_CAMS: tuple[str, ...] = (*_CHANNEL_WEIGHTS, *_POSITION_WEIGHTS)
#: Every CAM variant computed from one forward (and, for the gradient ones, one ``autograd.grad``).
CAM_METHODS: tuple[str, ...] = (*GRADIENT_CAMS, "eigencam")


def cam_from_weights(activations: Tensor, weights: Tensor) -> Tensor:
    """``ReLU(sum_k w_k A_k)`` for channel weights ``[B, K]``: the CAM at the layer's resolution ``[B, h, w]``."""
    return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))


def cam_from_gradients(method: str, activations: Tensor, gradients: Tensor) -> Tensor:
    """The ``method`` CAM (one of :data:`GRADIENT_CAMS`) at the layer's resolution, ``[B, h, w]``.

    Example:
        >>> a, g = torch.rand(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
        >>> torch.allclose(cam_from_gradients("hirescam", a, g), torch.relu((a * g).sum(1)))
        True
    """
    if method in _CHANNEL_WEIGHTS:
        return cam_from_weights(activations, _CHANNEL_WEIGHTS[method](activations, gradients))
    if method in _POSITION_WEIGHTS:
        return torch.relu((_POSITION_WEIGHTS[method](activations, gradients) * activations).sum(dim=1))
    raise ValueError(f"unknown gradient CAM {method!r}; choose from {list(GRADIENT_CAMS)}.")


def eigen_projection(activations: Tensor) -> Tensor:
    """Each image's centred activations projected on their first principal direction, ``[B, h, w]``.

    The sign of a principal direction is arbitrary; it is chosen so that the projection correlates
    positively with the channel-mean activation map (the map then highlights what the layer responds to).
    EigenCAM is ``ReLU`` of this. An image whose activations hold NaN or inf gets a NaN map (as the gradient CAMs
    give it; the SVD of such values does not converge).
    """
    batch, _, height, width = activations.shape
    flat = activations.float().flatten(2).transpose(1, 2)  # [B, hw, K]
    finite = torch.isfinite(flat).flatten(1).all(dim=1)  # [B]
    flat = torch.where(finite[:, None, None], flat, torch.zeros_like(flat))
    centred = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.einsum("bnk,bk->bn", centred, vh[:, 0, :])
    mean_map = flat.mean(dim=2)
    agreement = ((projection - projection.mean(1, keepdim=True)) * (mean_map - mean_map.mean(1, keepdim=True))).sum(1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    projection = torch.where(finite[:, None], projection * sign[:, None], torch.full_like(projection, math.nan))
    return projection.view(batch, height, width)


def _gradient_cam(method: str) -> Callable[[MethodContext], Tensor]:
    def compute(ctx: MethodContext) -> Tensor:
        return cam_from_gradients(method, ctx.activation, ctx.layer_grad)

    return compute


def _eigencam(ctx: MethodContext) -> Tensor:
    return torch.relu(eigen_projection(ctx.activation))


_PUBLIC = {
    "gradcam": "grad_cam",
    "gradcampp": "grad_cam_plus_plus",
    "xgradcam": "xgrad_cam",
    "layercam": "layer_cam",
    "hirescam": "hires_cam",
}
#: The CAM methods of :func:`~lightning_explain.functional.explain`: from the shared pass's layer output (and
#: gradient), at the layer's resolution.
SPECS: tuple[MethodSpec, ...] = (
    *(
        MethodSpec(
            method,
            _gradient_cam(method),
            reads=frozenset({"layer", "layer_grad"}),
            at_layer=True,
            aliases=("gradcam++",) if method == "gradcampp" else (),
            default=method == "gradcam",
            function=_PUBLIC[method],
        )
        for method in GRADIENT_CAMS
    ),
    MethodSpec("eigencam", _eigencam, reads=frozenset({"layer"}), at_layer=True, function="eigen_cam"),
)
