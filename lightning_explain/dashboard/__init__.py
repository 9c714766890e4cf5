"""The Explain dashboard: a TensorBoard tab (and the offline report) that shows every explained epoch at once.

- :mod:`~lightning_explain.dashboard.data`: the data API, reading runs and cells from a log dir's event files.
- :mod:`~lightning_explain.dashboard.plugin`: the TensorBoard plugin (found through the ``tensorboard_plugins``
  entry point) that serves the data API and the front-end (``static/``, plain JavaScript and CSS).
- :mod:`~lightning_explain.dashboard.summary`: the small per-epoch summary the callback logs for it.

Importing this package imports neither TensorBoard nor torch.
"""

from __future__ import annotations

__all__: list[str] = []
