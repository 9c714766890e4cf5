"""Catch a shortcut-learning CNN from the numbers: two runs on ShortcutShapes, one alert.

The code lives in :mod:`lightning_explain.tools.demo` (also run by ``lightning-explain demo``); this script is the
copyable entry point used by ``make demo``. Each run writes into a new ``OUT/version_N`` and prints it:

    python examples/shortcut_detection.py --out runs/shortcut_demo
    tensorboard --logdir runs/shortcut_demo --samples_per_plugin images=1000
    lightning-explain report runs/shortcut_demo/version_0 -o report.html
"""

from __future__ import annotations

from lightning_explain.tools.demo import SmallCNN, main, print_table, train

__all__ = ["SmallCNN", "main", "print_table", "train"]

if __name__ == "__main__":
    main()
