"""FilterGrid: the weights of a convolution layer as an image grid, so edge and colour detectors can be seen forming."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import Tensor, nn

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._view import ViewCallback
from lightning_explain.capture import resolve_layer
from lightning_explain.epoch.checks import check_positive_int
from lightning_explain.epoch.distributed import full_tensor
from lightning_explain.output.render_views import filter_grid

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["FilterGrid"]


class FilterGrid(ViewCallback):
    """Log the weights of a convolution layer (default: the first ``Conv2d``) as an image grid every n epochs.

    Each filter ``[in_channels, kh, kw]`` becomes one cell (RGB for 3 input channels, grey for 1), enlarged with
    nearest neighbours. Logged once before the first training step (the initial filters) and at the end of every
    ``every_n_epochs``-th validation epoch (never in the sanity check; global rank zero only). No forward pass:
    it reads the weights, so it costs well under a millisecond for a resnet18 ``conv1``.

    Args:
        layer: dotted name of an ``nn.Conv2d`` whose weights have 1 or 3 input channels; None = the first Conv2d.
        every_n_epochs: log when ``current_epoch % every_n_epochs == 0``.
        max_filters: show the first ``max_filters`` output channels.
        columns: filters per grid row.
        scale: ``"layer"`` (one colour scale for the whole layer) or ``"filter"`` (each filter min-max scaled).
        cell_size: long side in pixels of each filter's cell.
        tag_prefix: first part of the tag.
        strict: re-raise failures instead of warning once.

    Logged images:
        - ``{tag_prefix}/filters/{layer}``: the grid, at the step of the epoch's validation metrics (0 for the initial
          filters).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[FilterGrid("conv1", every_n_epochs=1)])
    """

    uses_probe = False

    def __init__(
        self,
        layer: str | None = None,
        *,
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        max_filters: int = 64,
        columns: int = 8,
        scale: Literal["layer", "filter"] = "layer",
        cell_size: int = 32,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, cell_size=cell_size, tag_prefix=tag_prefix, strict=strict)
        check_positive_int(max_filters=max_filters, columns=columns)
        if scale not in ("layer", "filter"):
            raise ValueError(f"scale must be 'layer' or 'filter'; got {scale!r}.")
        self.layer, self.max_filters, self.columns, self.scale = layer, max_filters, columns, scale
        self._layer_name: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, tag_prefix=self.tag_prefix)

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layer is None:
            first: tuple[str, nn.Module] | None = next(
                ((n, m) for n, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)), None
            )
            if first is None:
                raise ValueError(
                    f"FilterGrid(layer=None) picks the first nn.Conv2d, but {type(pl_module).__name__} "
                    "has none. Pass layer='<dotted name of a Conv2d>'."
                )
            name, module = first[0], first[1]
        else:
            name, module = resolve_layer(pl_module, self.layer)
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Conv2d) or not isinstance(weight, Tensor) or weight.shape[1] not in (1, 3):
            got = (
                f"{type(module).__name__} with weight {list(weight.shape)}"
                if isinstance(weight, Tensor)
                else (type(module).__name__)
            )
            raise ValueError(
                f"FilterGrid shows filters as images, so layer {name!r} must be an nn.Conv2d with 1 or 3 input "
                f"channels per filter; it is a {got}. Pick the first conv layer (layer=None) or another Conv2d that "
                "reads the image."
            )
        self._layer_name = name

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:  # the untrained filters, as epoch 0's "before"
            self._run(trainer, pl_module)
        except Exception as err:
            self._fail("the view", err, trainer.current_epoch)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._layer_name is not None
        _, module = resolve_layer(pl_module, self._layer_name)
        assert isinstance(module, nn.Conv2d)
        weight = full_tensor(module.weight)[: self.max_filters]
        grid = filter_grid(weight, columns=self.columns, scale=self.scale, cell_size=self.cell_size)
        self._write(trainer, {f"{self.tag_prefix}/filters/{self._layer_name}": grid})
