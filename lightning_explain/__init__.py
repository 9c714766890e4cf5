"""lightning_explain: see what a vision model looks at while it trains.

Add one callback to a PyTorch Lightning ``Trainer``; at the end of each validation epoch it explains a fixed
probe batch (Grad-CAM, saliency, channel activations) and logs image grids to TensorBoard.

Example:
    >>> from lightning_explain import ExplainCallback
    >>> callback = ExplainCallback(layer="layer4")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_explain.callbacks.activation_max import ActivationMaximization
    from lightning_explain.callbacks.errors import ErrorAttribution
    from lightning_explain.callbacks.explain import ExplainCallback
    from lightning_explain.callbacks.feature_maps import FeatureMaps
    from lightning_explain.callbacks.filters import FilterGrid
    from lightning_explain.callbacks.focus_alert import FocusAlert
    from lightning_explain.callbacks.inversion import FeatureInversion
    from lightning_explain.callbacks.tcav import TCAVCallback

#: Where each public name lives. They are imported on first use (PEP 562), so that ``import lightning_explain.x``
#: for a part that needs neither torch nor Lightning (the TensorBoard plugin, loaded at every TensorBoard start)
#: does not import them: seconds at TensorBoard's start-up.
_CALLBACKS = {
    "ActivationMaximization": "activation_max",
    "ErrorAttribution": "errors",
    "ExplainCallback": "explain",
    "FeatureInversion": "inversion",
    "FeatureMaps": "feature_maps",
    "FilterGrid": "filters",
    "FocusAlert": "focus_alert",
    "TCAVCallback": "tcav",
}


def __getattr__(name: str) -> Any:
    module = _CALLBACKS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_explain.callbacks.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "ActivationMaximization",
    "ErrorAttribution",
    "ExplainCallback",
    "FeatureInversion",
    "FeatureMaps",
    "FilterGrid",
    "FocusAlert",
    "TCAVCallback",
    "__version__",
]
