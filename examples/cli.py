"""LightningCLI with lightning_explain's callbacks configured from YAML.

    python examples/cli.py fit --config examples/config.yaml
    python examples/cli.py fit --config examples/config.yaml --trainer.max_epochs 2 --print_config

The model and data module are named by ``class_path`` in the config (any LightningModule / LightningDataModule).
"""

from __future__ import annotations

from collections.abc import Sequence

try:  # the unified package (import lightning as L), else pytorch_lightning: the callbacks work with either
    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI
except ImportError:
    import pytorch_lightning as pl  # type: ignore[no-redef]
    from pytorch_lightning.cli import LightningCLI  # type: ignore[assignment]


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
