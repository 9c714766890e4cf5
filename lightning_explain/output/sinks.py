"""Where images go: TensorBoard, loggers with ``log_image``, or PNG files when no logger takes images.

Image loggers, in the order they are recognised:

- TensorBoard (anything whose ``experiment`` has ``add_image``): ``add_image(tag, image, step)``.
- Any logger with ``log_image(key, images, step)`` (Lightning's ``WandbLogger``, and user loggers in that
  style): one ``H x W x 3`` ``uint8`` array per call.
- MLflow (``MLFlowLogger``: its ``experiment`` is an ``MlflowClient`` and the logger has a ``run_id``):
  ``MlflowClient.log_image(run_id, image, key=tag, step=step)``, shown in MLflow's image view per step.

With none of them, PNG files go to ``<log_dir>/explain_images/<tag>/epoch=EEEE-step=SSSSSSS.png`` (next to a
``CSVLogger``'s ``metrics.csv``), or under the Trainer's ``default_root_dir`` without a logger.

TensorBoard images are PNGs at zlib level 1 (:data:`PNG_COMPRESS_LEVEL`), handed to the ``SummaryWriter``'s public
``file_writer`` as the ``Summary`` record that ``add_image`` itself builds (``add_image`` takes pixels only and
encodes at zlib level 6, about 2.5x slower). With ``LIGHTNING_EXPLAIN_FAST_CRC=1`` in the environment
(:data:`FAST_CRC_ENV`), TensorBoard's pure-Python record checksum is replaced by an identical vectorised one for the
whole process (:mod:`lightning_explain.output._crc32c`); by default TensorBoard is left as it is.

TensorBoard images and PNG files are encoded and written by a background thread of the view's sink
(:class:`BackgroundWriter`), so training does not wait for PNG encoding. The views open it at ``setup`` and close it
(every image written, the thread joined) at ``teardown`` of ``fit``, ``validate`` or ``test``, and when training
stops on an exception or ``KeyboardInterrupt`` (before Lightning closes the loggers): each Trainer's views have
their own writers, and no thread outlives a run. Its queue is bounded (a full queue makes the caller wait: nothing
is dropped). Loggers with ``log_image`` (W&B) and MLflow are written on the calling thread: they order their records
by step, and a late image would be refused.

A disk that fills up or a log dir that becomes unwritable mid-run stops no training: the TensorBoard event file is
guarded (:mod:`lightning_explain.output.disk`), PNG files that cannot be written are skipped; the sink warns once
with the cause, and writing resumes at the first later epoch the disk takes it.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_explain.output._crc32c import speed_up_tensorboard
from lightning_explain.output.charts import CHARTS
from lightning_explain.output.disk import EventFileGuard, describe_os_error, guard_event_file

__all__ = [
    "FAST_CRC_ENV",
    "PNG_COMPRESS_LEVEL",
    "QUEUE_BATCHES",
    "THREAD_NAME",
    "BackgroundWriter",
    "ImageSink",
    "encode_png",
    "fallback_dir",
    "fast_crc_requested",
    "image_capable",
    "image_paths",
    "image_writer",
    "scalar_layout",
    "write_images",
]

#: Writes one ``uint8`` ``[3, H, W]`` image under a tag at a step.
ImageWriter = Callable[[str, Tensor, int], None]

#: The environment variable that opts in to the vectorised CRC-32C for TensorBoard's records (``1``, ``true``, ``yes``).
FAST_CRC_ENV = "LIGHTNING_EXPLAIN_FAST_CRC"


def fast_crc_requested() -> bool:
    """Whether :data:`FAST_CRC_ENV` asks for the vectorised CRC-32C (off unless set to ``1``, ``true`` or ``yes``)."""
    return os.environ.get(FAST_CRC_ENV, "").strip().lower() in ("1", "true", "yes")


def _tensorboard_writer(logger: Any) -> Any | None:
    """The ``SummaryWriter`` of a TensorBoard logger (anything whose experiment has ``add_image``)."""
    experiment = _experiment(logger)
    return experiment if callable(getattr(experiment, "add_image", None)) else None


def scalar_layout(prefix: str, methods: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """A TensorBoard custom-scalar layout: for each method, the charts of
    :data:`~lightning_explain.output.charts.CHARTS`.

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
        if fast_crc_requested():  # opted in: TensorBoard's pure-Python checksum, vectorised, for the process
            speed_up_tensorboard()
        return lambda tag, image, step: _add_tensorboard_image(writer, tag, image, step)
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


#: zlib level of the PNGs written for TensorBoard: 1 encodes about 2.5x faster than TensorBoard's default (6) for
#: about 10 % larger files of these grids.
PNG_COMPRESS_LEVEL = 1


def encode_png(image: Tensor, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG bytes of a ``uint8`` ``[3, H, W]`` image."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(_hwc(image)).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def _add_tensorboard_image(writer: Any, tag: str, image: Tensor, step: int) -> None:
    """The image as TensorBoard's ``add_image`` records it, encoded at :data:`PNG_COMPRESS_LEVEL`.

    ``SummaryWriter.add_image`` takes pixels and encodes them itself (zlib level 6); no public method takes an
    encoded image. So the PNG goes into the same ``Summary`` record ``add_image`` builds, handed to the writer's
    public ``file_writer`` (torch's and tensorboardX's ``SummaryWriter``) with its documented ``add_summary``.
    Without one (another writer class, or a closed writer), ``add_image``.
    """
    file_writer: Any = getattr(writer, "file_writer", None)
    if file_writer is None or not callable(getattr(file_writer, "add_summary", None)):
        writer.add_image(tag, image, global_step=step, dataformats="CHW")
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    png = Summary.Image(
        height=image.shape[1], width=image.shape[2], colorspace=3, encoded_image_string=encode_png(image)
    )
    file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=png)]), step)


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


#: Image batches the background queue holds before a new one waits (each is one view's grids of one epoch).
QUEUE_BATCHES = 4


class BackgroundWriter:
    """A daemon thread that runs image-writing jobs in order, off the training thread, from ``start`` to ``close``.

    ``submit`` waits while ``max_pending`` jobs are queued (memory stays bounded; nothing is dropped) and starts the
    thread if it is not running. ``flush`` returns when every job submitted before it has run, and re-raises the
    first error a job raised since the last flush (the images of that job are lost; the caller reports it).
    ``close`` flushes, then stops and joins the thread (a later ``submit`` starts a new one). ``seconds`` is the time
    the thread spent running jobs. Each view's :class:`ImageSink` owns one, opened at ``setup`` and closed at
    ``teardown``: two Trainers in one process never share a queue, and no thread outlives a run.

    Example:
        >>> done = []
        >>> writer = BackgroundWriter()
        >>> writer.submit(lambda: done.append(1))
        >>> writer.close(); done, writer.alive()
        ([1], False)
    """

    def __init__(self, max_pending: int = QUEUE_BATCHES) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0

    def start(self) -> None:
        """Start the thread (nothing if it runs)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()

    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[], None]) -> None:
        self.start()
        self._jobs.put(job)

    def flush(self) -> None:
        self._jobs.join()
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"writing explanation images failed in the background: {error}") from error

    def close(self) -> None:
        """Flush, then stop and join the thread; re-raises a job's error (after the thread has stopped)."""
        try:
            self.flush()
        finally:
            with self._lock:
                thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._jobs.put(None)  # the thread's signal to return
                thread.join()

    def pending(self) -> int:
        """Jobs queued or running."""
        return self._jobs.unfinished_tasks

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            start = time.perf_counter()
            try:
                job()
            except BaseException as err:  # reported by the next flush, on the caller's thread
                if self._error is None:
                    self._error = err
            finally:
                self.seconds += time.perf_counter() - start
                self._jobs.task_done()


#: The name of every :class:`BackgroundWriter` thread.
THREAD_NAME = "lightning_explain-images"


class ImageSink:
    """Sends each image grid to every image-capable logger, or to PNG files when there is none.

    PNG files are written as ``<folder>/<tag>/epoch=EEEE-step=SSSSSSS.png`` (the tag's ``/`` become folders).
    Between :meth:`open` and :meth:`close`, TensorBoard images and PNG files are written by the sink's own
    :class:`BackgroundWriter` (:attr:`writer`); otherwise (or with ``background=False``) on the calling thread.
    Call :meth:`flush` to wait for them.
    """

    def __init__(self, background: bool = True) -> None:
        self._warned_fallback = False
        self.background = background
        self._tensorboards: list[Any] = []
        #: The background writer of the current run (kept after :meth:`close` for its ``seconds``); None before.
        self.writer: BackgroundWriter | None = None
        self._open = False
        self._guards: list[EventFileGuard] = []
        self._file_error: OSError | None = None  # the first PNG file that could not be written (set by the thread)
        self._warned_disk = False

    def open(self) -> None:
        """Start a background writer for a run (a view's ``setup``). Nothing with ``background=False``."""
        if self.background and not self._open:
            self.writer, self._open = BackgroundWriter(), True
            self.writer.start()

    def close(self) -> None:
        """Write every pending image, stop and join the writer's thread (a view's ``teardown`` and
        ``on_exception``). Re-raises a background write's error once the thread has stopped."""
        if not self._open:
            self.flush()
            return
        self._open = False
        try:
            self.flush()
        finally:
            if self.writer is not None:
                self.writer.close()

    def guard(self, loggers: Iterable[Any]) -> None:
        """Put the disk guard (:mod:`lightning_explain.output.disk`) in front of every TensorBoard logger's event file
        now (a view's ``setup``), so a disk that fills up before the view's first image cannot stop training through
        Lightning's own scalars either."""
        for logger in loggers:
            tensorboard = _tensorboard_writer(logger)
            if tensorboard is None:
                continue
            guard = guard_event_file(tensorboard)
            if guard is not None and guard not in self._guards:
                self._guards.append(guard)

    def _retry(self) -> None:
        """On the calling thread, before a text or a layout goes to TensorBoard: a guard in an outage tries a new
        event file (so the text is not dropped while the images, retried on the writer's thread, get through)."""
        for guard in self._guards:
            guard.retry()

    def write_layout(self, loggers: Iterable[Any], layout: dict[str, dict[str, list[Any]]]) -> None:
        """Give every TensorBoard logger the custom-scalar layout (other loggers have no such thing)."""
        self._retry()
        for logger in loggers:
            writer = _tensorboard_writer(logger)
            if writer is not None and callable(getattr(writer, "add_custom_scalars", None)):
                writer.add_custom_scalars(layout)

    def write_text(self, loggers: Iterable[Any], tag: str, text: str, *, step: int) -> None:
        """Give every TensorBoard logger a text summary (the grids' layout, read back by the HTML report)."""
        self._retry()
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
        """Write ``images`` (tag -> ``uint8`` ``[3, H, W]``); return the PNG paths (written once flushed), if any."""
        self._report_disk()
        loggers = list(loggers)
        images = {tag: image.detach().cpu() for tag, image in images.items()}
        now: list[Callable[[], None]] = []
        later: list[Callable[[], None]] = []
        for logger in loggers:
            write = image_writer(logger)
            if write is None:
                continue
            tensorboard = _tensorboard_writer(logger)
            guard = None
            if tensorboard is not None:
                if tensorboard not in self._tensorboards:
                    self._tensorboards.append(tensorboard)
                guard = guard_event_file(tensorboard)
                if guard is not None and guard not in self._guards:
                    self._guards.append(guard)
            job = _job(write, images, step, guard)
            (later if tensorboard is not None else now).append(job)
        paths: list[Path] = []
        if not now and not later:
            folder = fallback_dir(loggers, default_root_dir)
            if not self._warned_fallback:
                self._warned_fallback = True
                warnings.warn(
                    f"no logger in the Trainer takes images (TensorBoardLogger, or one with log_image); "
                    f"the explanation grids are written as PNG files under {folder}.",
                    UserWarning,
                    stacklevel=2,
                )
            paths = image_paths(folder, images, step=step, epoch=epoch)
            later.append(lambda: self._write_files(folder, images, step, epoch))
        for job in now:
            job()
        for job in later:
            if self._open and self.writer is not None:
                self.writer.submit(job)
            else:
                job()
        return paths

    def flush(self) -> None:
        """Wait until every image handed to the background writer is written (and TensorBoard has it on disk)."""
        try:
            if self._open and self.writer is not None:
                self.writer.flush()
        finally:
            for writer in self._tensorboards:
                if callable(getattr(writer, "flush", None)):
                    writer.flush()
            self._report_disk()

    def _write_files(self, folder: Path, images: Mapping[str, Tensor], step: int, epoch: int) -> None:
        try:
            write_images(folder, images, step=step, epoch=epoch)
        except OSError as err:  # disk full, folder unwritable: skipped; reported once on the caller's thread
            if self._file_error is None:
                self._file_error = err

    def _report_disk(self) -> None:
        """Warn once (on the calling thread) about the first write the disk refused, with its cause."""
        for guard in self._guards:
            err = guard.take_report()
            if err is not None:
                self._warn_disk(err, f"the TensorBoard event file {guard.path or '(unknown)'}", scalars=True)
        if self._file_error is not None:
            self._warn_disk(self._file_error, "the PNG files", scalars=False)

    def _warn_disk(self, err: OSError, where: str, *, scalars: bool) -> None:
        if self._warned_disk:
            return
        self._warned_disk = True
        dropped = " (TensorBoard's other records, Lightning's scalars among them, too)" if scalars else ""
        warnings.warn(
            f"the explanation images could not be written to {where}: {describe_os_error(err)}. Images are skipped "
            f"while the disk refuses them{dropped}; training goes on, and writing resumes at the first epoch the disk "
            "takes them again. Free space on the disk, or make the log dir writable. This warning is shown once.",
            UserWarning,
            stacklevel=3,
        )


def _job(
    write: ImageWriter, images: Mapping[str, Tensor], step: int, guard: EventFileGuard | None = None
) -> Callable[[], None]:
    def run() -> None:
        if guard is not None and not guard.retry():  # the disk still refuses the event file: skip this epoch
            return
        for tag, image in images.items():
            write(tag, image, step)

    return run


def image_paths(folder: Path, images: Mapping[str, Tensor], *, step: int, epoch: int) -> list[Path]:
    """Where :func:`write_images` puts each image: always under ``folder`` (a tag's empty, ``.`` and ``..`` parts
    are left out, control characters become ``_``)."""
    return [folder.joinpath(*_safe_parts(tag)) / f"epoch={epoch:04d}-step={step:07d}.png" for tag in images]


def _safe_parts(tag: str) -> list[str]:
    clean = "".join("_" if ord(ch) < 32 or ch in "\\\x7f" else ch for ch in tag)
    return [part for part in clean.split("/") if part not in ("", ".", "..")] or ["_"]


def write_images(folder: Path, images: Mapping[str, Tensor], *, step: int, epoch: int) -> list[Path]:
    """Save each ``uint8`` ``[3, H, W]`` image as ``folder/<tag>/epoch=EEEE-step=SSSSSSS.png``."""
    paths = image_paths(folder, images, step=step, epoch=epoch)
    for path, image in zip(paths, images.values(), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image))
    return paths
