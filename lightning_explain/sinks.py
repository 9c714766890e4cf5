"""Where images go: TensorBoard, loggers with ``log_image``, or PNG files when no logger takes images.

Image loggers, in the order they are recognised:

- TensorBoard (anything whose ``experiment`` has ``add_image``): ``add_image(tag, image, step)``.
- Any logger with ``log_image(key, images, step)`` (Lightning's ``WandbLogger``, and user loggers in that
  style): one ``H x W x 3`` ``uint8`` array per call.
- MLflow (``MLFlowLogger``: its ``experiment`` is an ``MlflowClient`` and the logger has a ``run_id``):
  ``MlflowClient.log_image(run_id, image, key=tag, step=step)``, shown in MLflow's image view per step.

With none of them, PNG files go to ``<log_dir>/explain_images/<tag>/epoch=EEEE-step=SSSSSSS.png`` (next to a
``CSVLogger``'s ``metrics.csv``), or under the Trainer's ``default_root_dir`` without a logger.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_explain.charts import CHARTS

__all__ = ["ImageSink", "fallback_dir", "image_capable", "image_writer", "scalar_layout", "write_images"]

#: Writes one ``uint8`` ``[3, H, W]`` image under a tag at a step.
ImageWriter = Callable[[str, Tensor, int], None]


def _tensorboard_writer(logger: Any) -> Any | None:
    """The ``SummaryWriter`` of a TensorBoard logger (anything whose experiment has ``add_image``)."""
    experiment = _experiment(logger)
    return experiment if callable(getattr(experiment, "add_image", None)) else None


def scalar_layout(prefix: str, methods: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """A TensorBoard custom-scalar layout: for each method, the charts of :data:`~lightning_explain.charts.CHARTS`.

    Example:
        >>> list(scalar_layout("explain", ["gradcam"])["lightning_explain"])[0]
        'gradcam: drift: distance (image sides)'
    """
    charts: dict[str, list[Any]] = {}
    for m in methods:
        for chart in CHARTS:
            charts[f"{m}: {chart.title}"] = ["Multiline", [chart.pattern(f"{prefix}/{m}")]]
    return {"lightning_explain": charts}


def _experiment(logger: Any) -> Any | None:
    try:
        return logger.experiment
    except Exception:  # a logger whose experiment cannot start is simply not an image sink
        return None


def image_writer(logger: Any) -> ImageWriter | None:
    """A function that sends one image to ``logger``, or None when the logger takes no images.

    Example:
        >>> image_writer(object()) is None  # e.g. a CSVLogger: no images, PNG files instead
        True
    """
    writer = _tensorboard_writer(logger)
    if writer is not None:
        return lambda tag, image, step: writer.add_image(tag, image, global_step=step, dataformats="CHW")
    if callable(getattr(logger, "log_image", None)):
        return lambda tag, image, step: logger.log_image(key=tag, images=[_hwc(image)], step=step)
    mlflow_like = any("mlflow" in cls.__module__.lower() for cls in type(logger).__mro__)
    if mlflow_like and isinstance(getattr(logger, "run_id", None), str | None):
        client = _experiment(logger)
        if client is not None and callable(getattr(client, "log_image", None)):
            return lambda tag, image, step: client.log_image(
                logger.run_id, _hwc(image), key=tag, step=step, synchronous=True
            )
    return None


def _hwc(image: Tensor) -> Any:
    return image.permute(1, 2, 0).numpy()


def image_capable(logger: Any) -> bool:
    """Whether ``logger`` can receive images (TensorBoard, ``log_image`` loggers, MLflow)."""
    return image_writer(logger) is not None


def fallback_dir(loggers: Iterable[Any], default_root_dir: str) -> Path:
    """The PNG folder used when no logger takes images: under the first logger's ``log_dir``, else the root."""
    for logger in loggers:
        log_dir = getattr(logger, "log_dir", None)
        if isinstance(log_dir, (str, os.PathLike)):
            return Path(log_dir) / "explain_images"
    return Path(default_root_dir) / "explain_images"


class ImageSink:
    """Sends each image grid to every image-capable logger, or to PNG files when there is none.

    PNG files are written as ``<folder>/<tag>/epoch=EEEE-step=SSSSSSS.png`` (the tag's ``/`` become folders).
    """

    def __init__(self) -> None:
        self._warned_fallback = False

    def write_layout(self, loggers: Iterable[Any], layout: dict[str, dict[str, list[Any]]]) -> None:
        """Give every TensorBoard logger the custom-scalar layout (other loggers have no such thing)."""
        for logger in loggers:
            writer = _tensorboard_writer(logger)
            if writer is not None and callable(getattr(writer, "add_custom_scalars", None)):
                writer.add_custom_scalars(layout)

    def write_text(self, loggers: Iterable[Any], tag: str, text: str, *, step: int) -> None:
        """Give every TensorBoard logger a text summary (the grids' layout, read back by the HTML report)."""
        for logger in loggers:
            writer = _tensorboard_writer(logger)
            if writer is not None and callable(getattr(writer, "add_text", None)):
                writer.add_text(tag, text, global_step=step)

    def write(
        self,
        loggers: Iterable[Any],
        images: Mapping[str, Tensor],
        *,
        step: int,
        epoch: int,
        default_root_dir: str,
    ) -> list[Path]:
        """Write ``images`` (tag -> ``uint8`` ``[3, H, W]``) and return the PNG paths written (if any)."""
        loggers = list(loggers)
        writers = [w for w in map(image_writer, loggers) if w is not None]
        if writers:
            for write in writers:
                for tag, image in images.items():
                    write(tag, image, step)
            return []
        folder = fallback_dir(loggers, default_root_dir)
        if not self._warned_fallback:
            self._warned_fallback = True
            warnings.warn(
                f"no logger in the Trainer takes images (TensorBoardLogger, or one with log_image); "
                f"the explanation grids are written as PNG files under {folder}.",
                UserWarning,
                stacklevel=2,
            )
        return write_images(folder, images, step=step, epoch=epoch)


def write_images(folder: Path, images: Mapping[str, Tensor], *, step: int, epoch: int) -> list[Path]:
    """Save each ``uint8`` ``[3, H, W]`` image as ``folder/<tag>/epoch=EEEE-step=SSSSSSS.png``."""
    from PIL import Image

    paths = []
    for tag, image in images.items():
        path = folder.joinpath(*tag.split("/")) / f"epoch={epoch:04d}-step={step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths
