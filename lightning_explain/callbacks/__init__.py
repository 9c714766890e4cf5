"""Lightning callbacks, one per file."""

from lightning_explain.callbacks.activation_max import ActivationMaximization
from lightning_explain.callbacks.errors import ErrorAttribution
from lightning_explain.callbacks.explain import ExplainCallback
from lightning_explain.callbacks.feature_maps import FeatureMaps
from lightning_explain.callbacks.filters import FilterGrid
from lightning_explain.callbacks.focus_alert import FocusAlert
from lightning_explain.callbacks.inversion import FeatureInversion
from lightning_explain.callbacks.tcav import TCAVCallback

__all__ = [
    "ActivationMaximization",
    "ErrorAttribution",
    "ExplainCallback",
    "FeatureInversion",
    "FeatureMaps",
    "FilterGrid",
    "FocusAlert",
    "TCAVCallback",
]
