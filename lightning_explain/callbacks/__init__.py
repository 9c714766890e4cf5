"""Lightning callbacks, one per file."""

from lightning_explain.callbacks.explain import ExplainCallback

__all__ = ["ExplainCallback"]
