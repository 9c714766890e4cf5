"""Lightning callbacks, one per file."""

from lightning_explain.callbacks.explain import ExplainCallback
from lightning_explain.callbacks.focus_alert import FocusAlert

__all__ = ["ExplainCallback", "FocusAlert"]
