"""Writing the report file: find the runs under a log dir, read them, render, write; progress bars on stderr.

Example:
    >>> write_report("/nonexistent", "report.html")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no TensorBoard event files under /nonexistent: ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning_explain.report.events import find_runs

__all__ = ["write_report"]


def _progress(total: int, label: str, quiet: bool) -> Any:
    """A tqdm bar on stderr: ``label [####....] n/total, note``."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        disable=quiet,
        file=sys.stderr,
        ascii=".#",
        bar_format="{desc} [{bar:24}] {n_fmt}/{total_fmt}{postfix}",
    )


def _step(bar: Any, what: str) -> None:
    bar.set_postfix_str(what, refresh=False)
    bar.update()


def write_report(logdir: str | Path, output: str | Path, *, quiet: bool = False) -> Path:
    """Read every run under ``logdir`` and write the HTML report to ``output``; return its path.

    The report is the Explain dashboard (the film strips, charts and alert marks of TensorBoard's Explain tab,
    from the same front-end), with its data inlined: see :mod:`lightning_explain.dashboard.offline`.

    Args:
        logdir: a TensorBoard log dir; every folder under it with event files is one run of the report.
        output: the HTML file to write (its folder is created).
        quiet: no progress bars and no closing line on stderr.

    Raises:
        FileNotFoundError: when ``logdir`` holds no event files, or event files without any image (no explanation
            to show: the callbacks were not in the run, or it logged to another logger).
    """
    root = Path(logdir)
    paths = find_runs(root)
    if not paths:
        raise FileNotFoundError(
            f"no TensorBoard event files under {root}: pass the log dir of a run that used a TensorBoardLogger "
            "(the folder given to TensorBoardLogger(save_dir), or one of its versions)."
        )
    from lightning_explain.dashboard.offline import dashboard_html

    with _progress(len(paths), "reading and cutting the grids", quiet) as bar:
        bar.total = None  # one step per view; the count of views is known only once the runs are read
        text = dashboard_html(
            root, f"lightning_explain report: {root.name}", lambda what: _step(bar, what), require_images=True
        )
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if not quiet:
        sys.stderr.write(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n")
    return out
