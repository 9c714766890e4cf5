"""Which layer is explained when the user names none. No Lightning import."""

from __future__ import annotations

from torch import nn

from lightning_explain.capture import default_conv_layer
from lightning_explain.functional.vit_layouts import default_token_layer, find_vit_layout

__all__ = ["default_layer"]


def default_layer(model: nn.Module) -> str:
    """The layer explained when none is given: a working token layer of a ViT, else the last ``Conv2d``.

    Example:
        >>> import torchvision
        >>> default_layer(torchvision.models.resnet18())
        'layer4.1.conv2'
    """
    layout = find_vit_layout(model)
    return default_token_layer(model, layout) if layout is not None else default_conv_layer(model)[0]
