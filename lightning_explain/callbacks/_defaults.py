"""The defaults every view's constructor shares, documented once.

Each callback keeps an explicit signature (``LightningCLI`` reads it) and takes these values as its defaults, so
that ``ExplainCallback(num_probe=...)`` and ``FeatureMaps(num_probe=...)`` mean the same thing and start the same.

- ``every_n_epochs``: run when ``current_epoch % every_n_epochs == 0`` (always under ``validate()``).
- ``num_probe``: how many validation samples form the probe (the first ones of the first val dataloader).
- ``colormap``: matplotlib colour map of the maps.
- ``alpha``: heat-map opacity in the overlays, in [0, 1].
- ``cell_size``: long side in pixels of each grid cell.
- ``input_key``, ``label_key``: keys of the images and labels in dict batches.
- ``tag_prefix``: first part of every logged tag.
- ``strict``: re-raise a failure instead of warning once and skipping the view.
"""

from __future__ import annotations

__all__ = [
    "ALPHA",
    "CELL_SIZE",
    "COLORMAP",
    "EVERY_N_EPOCHS",
    "INPUT_KEY",
    "LABEL_KEY",
    "NUM_PROBE",
    "STRICT",
    "TAG_PREFIX",
]

EVERY_N_EPOCHS = 1
NUM_PROBE = 16
COLORMAP = "jet"
ALPHA = 0.5
CELL_SIZE = 128
INPUT_KEY = "image"
LABEL_KEY = "label"
TAG_PREFIX = "explain"
STRICT = False
