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
from lightning_explain.functional.spec import MethodContext, MethodSpec

__all__ = ["SPECS", "feature_maps"]


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


def _top_channels(ctx: MethodContext) -> Tensor:
    """The ``top_k`` channels of the layer with the highest mean activation, ``[B, k, h, w]``; their indices go to
    ``extras["activation_channels"]`` (``ExplainResult.activation_channels``)."""
    act = ctx.activation
    k = min(ctx.top_k, act.shape[1])
    channels = act.mean(dim=(2, 3)).topk(k, dim=1).indices
    ctx.extras["activation_channels"] = channels
    return act.gather(1, channels[:, :, None, None].expand(-1, -1, *act.shape[2:]))


#: ``activations`` in :func:`~lightning_explain.functional.explain`: the shared pass's layer output, top-k channels.
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "activations",
        _top_channels,
        reads=frozenset({"layer"}),
        at_layer=True,
        default=True,
        function="channel_activations",
    ),
)
