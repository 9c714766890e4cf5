"""FeatureMaps: the channel maps of chosen layers for the first probe images, as image grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._view import ViewCallback
from lightning_explain.capture import default_conv_layer, preserve_model_state, resolve_layer
from lightning_explain.epoch.checks import check_positive_int
from lightning_explain.epoch.probe import BatchUnpacker
from lightning_explain.functional.feature_maps import feature_maps
from lightning_explain.output.render import to_display
from lightning_explain.output.render_views import feature_map_grid

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["FeatureMaps"]


class FeatureMaps(ViewCallback):
    """Log the channel maps of chosen layers for the first probe images, every n validation epochs.

    One no-grad forward of ``num_images`` probe images with a hook per layer (hooks removed in ``finally``, model
    state restored). Each row: input | the first ``max_channels`` channels of the layer, each min-max scaled on
    its own and enlarged with nearest neighbours to the input size (so the layer's resolution stays visible).
    Cost: one forward of ``num_images`` images plus the grids (resnet18, 2 images at 224 px, conv1 + layer4: a third
    to a half of a plain forward of 16 images).

    Args:
        layers: dotted names of layers with ``[B, C, H, W]`` outputs; None = the first and the last Conv2d.
        num_images: probe images shown (rows).
        max_channels: channels shown per layer (the first ones, so the same channels every epoch).
        colormap: matplotlib colour map (default ``"viridis"``).
        every_n_epochs, num_probe, probe, probe_labels, mean, std, cell_size: as in
            :class:`~lightning_explain.ExplainCallback`.
        input_key, label_key, unpack_batch, tag_prefix, strict: as in :class:`~lightning_explain.ExplainCallback`.

    Logged images:
        - ``{tag_prefix}/feature_maps/{layer}``: per layer, a row per image: input | channel 0 ... k-1.

    Example:
        >>> cb = FeatureMaps(["layer1", "layer3"], num_images=2, max_channels=8)
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        *,
        num_images: int = 2,
        max_channels: int = 16,
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        num_probe: int = D.NUM_PROBE,
        probe: Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "viridis",
        cell_size: int = 64,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=num_probe,
            probe=probe,
            mean=mean,
            std=std,
            colormap=colormap,
            cell_size=cell_size,
            input_key=input_key,
            label_key=label_key,
            unpack_batch=unpack_batch,
            tag_prefix=tag_prefix,
            strict=strict,
        )
        check_positive_int(num_images=num_images, max_channels=max_channels)
        if isinstance(layers, str):
            layers = [layers]
        self.layers = list(layers) if layers is not None else None
        self.num_images, self.max_channels = num_images, max_channels
        self._layer_names: list[str] = []
        #: The maps of the last logged epoch: layer -> ``[num_images, k, h, w]`` in [0, 1].
        self.latest_maps: dict[str, Tensor] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, tag_prefix=self.tag_prefix)

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layers is None:
            convs = [n for n, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                default_conv_layer(pl_module)  # raises with the fix
            self._layer_names = list(dict.fromkeys([convs[0], convs[-1]]))
        else:
            self._layer_names = [resolve_layer(pl_module, name)[0] for name in self.layers]

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None
        images = self._probe.images[: self.num_images].to(pl_module.device)
        with preserve_model_state(pl_module):
            maps = feature_maps(pl_module, images, self._layer_names, self.max_channels)
        self.latest_maps = {name: m.cpu() for name, m in maps.items()}
        display = to_display(images, self.mean, self.std)
        grids = {
            f"{self.tag_prefix}/feature_maps/{name}": feature_map_grid(
                display, m, colormap=self.colormap, cell_size=self.cell_size
            )
            for name, m in maps.items()
        }
        self._write(trainer, grids)
