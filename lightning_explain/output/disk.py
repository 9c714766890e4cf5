"""When the log folder cannot be written (disk full, permissions): the views skip their images, training goes on.

TensorBoard's ``SummaryWriter`` writes every record of a run (Lightning's scalars and the views' images) on one
thread of its own (``EventFileWriter``'s ``_AsyncWriter``). An ``OSError`` there (``ENOSPC``: the disk is full,
``EACCES``: the folder became unwritable, ``EIO``...) ends that thread, and every later ``add_*`` call re-raises it:
Lightning's next ``log_metrics`` would stop training. :func:`guard_event_file` puts an :class:`EventFileGuard` in
front of the writer's record writer (the object that thread writes each record with), so that:

- an ``OSError`` from a write or a flush ends nothing: the record is dropped, and so is every record after it (the
  file may hold a torn record now; nothing is appended after it, so readers keep every complete record before it);
- the first error of each writer is reported once, by the views' sinks, as a warning that names the file and the
  cause (:meth:`EventFileGuard.take_report`);
- at each later epoch a view is due, :meth:`EventFileGuard.retry` starts a new event file next to the broken one
  (``<its name>.0001``, sorted after it, so TensorBoard moves on to it); when that works, every record (images and
  Lightning's scalars) is written again; when the disk is still full, nothing is left behind and nothing is tried
  until the next due epoch.

Writers without that structure (``tensorboardX``, TensorBoard with TensorFlow's ``gfile``, whose errors are not
``OSError``) are left as they are: :func:`guard_event_file` returns None.

Example:
    >>> guard_event_file(object()) is None
    True
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from typing import Any

__all__ = ["EventFileGuard", "describe_os_error", "guard_event_file"]


def describe_os_error(err: OSError) -> str:
    """``err`` in one line with its errno name, e.g. ``[ENOSPC] No space left on device: 'runs/x'``.

    Example:
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
        '[ENOSPC] No space left on device'
    """
    code = errno.errorcode.get(err.errno, str(err.errno)) if err.errno is not None else type(err).__name__
    where = f": {err.filename!r}" if err.filename is not None else ""
    return f"[{code}] {err.strerror or err}{where}"


class EventFileGuard:
    """Stands in for the ``RecordWriter`` of one TensorBoard event file (see the module docstring).

    ``write``, ``flush``, ``close`` and ``closed`` are what TensorBoard's writer thread calls; :meth:`retry` and
    :meth:`take_report` are for the views' sinks. ``error`` is the error of the current outage (None while records
    are written); ``dropped`` counts the records dropped since the guard was installed; ``path`` is the file written.
    """

    def __init__(self, records: Any, path: str | None) -> None:
        self._records = records
        self._lock = threading.Lock()
        self._base = path
        self._reopened = 0
        self._reported = False
        self._first: OSError | None = None
        self.path = path
        self.error: OSError | None = None
        self.dropped = 0

    # ------------------------------------------------------------------ what TensorBoard's writer thread calls

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.error is None:
                try:
                    self._records.write(data)
                    return
                except OSError as err:
                    self._fail(err)
            self.dropped += 1

    def flush(self) -> None:
        with self._lock:
            if self.error is None:
                try:
                    self._records.flush()
                except OSError as err:
                    self._fail(err)

    def close(self) -> None:
        with self._lock:
            try:
                self._records.close()
            except OSError as err:  # the data of a broken file is lost either way; the views report it
                if self.error is None:
                    self._fail(err)

    @property
    def closed(self) -> bool:
        return bool(getattr(self._records, "closed", False))

    def _fail(self, err: OSError) -> None:
        self.error = err
        if self._first is None:
            self._first = err

    # ------------------------------------------------------------------ what the views' sinks call

    def retry(self) -> bool:
        """After an outage, start a new event file next to the broken one; True when records are written (again).

        The new file begins with TensorBoard's ``file_version`` record; when even that cannot be written, it is
        removed and the guard stays in its outage (False)."""
        with self._lock:
            if self.error is None:
                return True
            if self._base is None:
                return False
            from tensorboard.compat import tf
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            path = f"{self._base}.{self._reopened + 1:04d}"
            try:
                records = RecordWriter(tf.io.gfile.GFile(path, "wb"))
                first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                records.write(first.SerializeToString())
                records.flush()
            except OSError:
                with contextlib.suppress(OSError):
                    os.remove(path)
                return False
            with contextlib.suppress(OSError):
                self._records.close()
            self._records, self.path, self.error = records, path, None
            self._reopened += 1
            return True

    def take_report(self) -> OSError | None:
        """The first write error of this file, once (None before it and after it was taken)."""
        with self._lock:
            if self._first is None or self._reported:
                return None
            self._reported = True
            return self._first


def guard_event_file(summary_writer: Any) -> EventFileGuard | None:
    """Install (once) an :class:`EventFileGuard` in ``summary_writer``'s event file writer; None when it has no
    TensorBoard ``EventFileWriter`` (see the module docstring) or its writer thread already stopped."""
    file_writer = getattr(summary_writer, "file_writer", None)
    event_writer = getattr(file_writer, "event_writer", None)
    async_writer: Any = getattr(event_writer, "_async_writer", None)
    worker = getattr(async_writer, "_worker", None)
    records = getattr(async_writer, "_writer", None)
    if isinstance(records, EventFileGuard):
        return records
    if records is None or worker is None or getattr(worker, "_record_writer", None) is not records:
        return None
    if getattr(worker, "exception", None) is not None or not worker.is_alive():
        return None
    if not all(callable(getattr(records, name, None)) for name in ("write", "flush", "close")):
        return None
    path = getattr(event_writer, "_file_name", None)
    guard = EventFileGuard(records, path if isinstance(path, str) else None)
    async_writer._writer = guard
    worker._record_writer = guard
    return guard
