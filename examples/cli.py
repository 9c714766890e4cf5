"""LightningCLI with lightning_explain's callbacks configured from YAML.

    python examples/cli.py fit --config examples/config.yaml
    python examples/cli.py fit --config examples/config.yaml --trainer.max_epochs 2 --print_config

The model and data module are named by ``class_path`` in the config (any LightningModule / LightningDataModule).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI


def cli(args: Sequence[str] | None = None, *, run: bool = True) -> LightningCLI:
    """Build (and by default run) the LightningCLI; ``args`` replace the command line."""
    return LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    cli()
