"""Channel maps of chosen layers from one no-grad forward (what :class:`~lightning_explain.FeatureMaps` shows).

No Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import Tensor, nn

from lightning_explain.capture import record_layer, resolve_layer
from lightning_explain.functional.context import grad_context, model_dtype
from lightning_explain.functional.maps import normalize_maps

__all__ = ["feature_maps"]


def feature_maps(model: nn.Module, inputs: Tensor, layers: Sequence[str], max_channels: int = 16) -> dict[str, Tensor]:
    """The first ``max_channels`` channel maps of each layer, ``[B, k, h, w]`` fp32, from one no-grad forward.

    Each map is min-max normalised on its own to [0, 1] (constant maps become 0). Hooks are removed on exit.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18(num_classes=3).eval()
        >>> maps = feature_maps(model, torch.rand(2, 3, 64, 64), ["conv1", "layer4"], max_channels=4)
        >>> {name: tuple(m.shape) for name, m in maps.items()}
        {'conv1': (2, 4, 32, 32), 'layer4': (2, 4, 2, 2)}
    """
    recordings = {}
    with grad_context(inputs.device), torch.no_grad(), ExitStack() as stack:
        for name in layers:
            _, module = resolve_layer(model, name)
            recordings[name] = stack.enter_context(record_layer(module, name))
        model(inputs.detach().clone().to(model_dtype(model)))
    return {
        name: normalize_maps(rec.feature_map()[:, :max_channels].detach().float()) for name, rec in recordings.items()
    }
