"""lightning_explain: see what a vision model looks at while it trains.

Add one callback to a PyTorch Lightning ``Trainer``; at the end of each validation epoch it explains a fixed
probe batch (Grad-CAM, saliency, channel activations) and logs image grids to TensorBoard.

Example:
    >>> from lightning_explain import ExplainCallback
    >>> callback = ExplainCallback(layer="layer4")
"""

from lightning_explain.callbacks.activation_max import ActivationMaximization
from lightning_explain.callbacks.errors import ErrorAttribution
from lightning_explain.callbacks.explain import ExplainCallback
from lightning_explain.callbacks.feature_maps import FeatureMaps
from lightning_explain.callbacks.filters import FilterGrid
from lightning_explain.callbacks.focus_alert import FocusAlert
from lightning_explain.callbacks.inversion import FeatureInversion
from lightning_explain.callbacks.tcav import TCAVCallback

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
