"""Where images go: TensorBoard, loggers with ``log_image``, or PNG files when no logger takes images."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["ImageSink", "fallback_dir", "image_capable", "scalar_layout", "write_images"]


def _tensorboard_writer(logger: Any) -> Any | None:
    """The ``SummaryWriter`` of a TensorBoard logger (anything whose experiment has ``add_image``)."""
    try:
        experiment = logger.experiment
    except Exception:  # a logger whose experiment cannot start is simply not an image sink
        return None
    return experiment if callable(getattr(experiment, "add_image", None)) else None


def scalar_layout(prefix: str, methods: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """A TensorBoard custom-scalar layout: drift and focus charts per method, side by side."""
    charts: dict[str, list[Any]] = {}
    for m in methods:
        base = f"{prefix}/{m}"
        charts[f"{m}: drift, EMD in image sides (prev, first, chance)"] = ["Multiline", [f"^{base}/drift/emd_"]]
        charts[f"{m}: drift, centre-of-mass shift"] = ["Multiline", [f"^{base}/drift/com_shift_"]]
        charts[f"{m}: focus on the object (lift, mask AUC, energy, area)"] = [
            "Multiline",
            [f"^{base}/focus/(lift|mask_auc|energy_in_object|object_area|pointing_game)$"],
        ]
        charts[f"{m}: focus on the cue and the border"] = [
            "Multiline",
            [f"^{base}/focus/(energy_in_cue|cue_area|border_energy|border_area)$"],
        ]
    return {"lightning_explain": charts}


def image_capable(logger: Any) -> bool:
    """Whether ``logger`` can receive images (TensorBoard, or any logger with ``log_image``)."""
    return _tensorboard_writer(logger) is not None or callable(getattr(logger, "log_image", None))


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
        capable = [lg for lg in loggers if image_capable(lg)]
        if capable:
            for logger in capable:
                writer = _tensorboard_writer(logger)
                for tag, image in images.items():
                    if writer is not None:
                        writer.add_image(tag, image, global_step=step, dataformats="CHW")
                    else:
                        logger.log_image(key=tag, images=[image.permute(1, 2, 0).numpy()], step=step)
            return []
        folder = fallback_dir(loggers, default_root_dir)
        if not self._warned_fallback:
            self._warned_fallback = True
            warnings.warn(
                f"no logger in the Trainer takes images (TensorBoardLogger, or one with log_image); "
                f"ExplainCallback writes its grids as PNG files under {folder}.",
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
