"""Peak extra resident memory of one call, measured in a fresh process (shared by the benchmark scripts).

Linux only: ``VmHWM`` (the peak RSS) after the call minus ``VmRSS`` before it, with the high-water mark reset
first through ``/proc/self/clear_refs``. ``tracemalloc`` does not see torch's allocations, and ``ru_maxrss`` of a
child started by ``subprocess`` inherits the parent's high-water mark, hence this route. Elsewhere: nan / None.
"""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise KeyError(field)


def print_peak_extra_mib(fn: Callable[[], Any]) -> None:
    """In the child: call ``fn`` once and print its peak RSS growth in MiB (nan where it cannot be measured)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        print(math.nan)
        return
    fn()
    print((_status_kib("VmHWM") - before) / 1024.0)


def child_peak_mib(args: Sequence[str], label: str) -> float | None:
    """In the parent: run ``python <args>`` (a child that calls :func:`print_peak_extra_mib`) and read its number."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        value = float(lines[-1]) if proc.returncode == 0 and lines else math.nan
    except ValueError:
        value = math.nan
    if proc.returncode != 0:
        print(f"  memory child for {label} failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
    return None if math.isnan(value) else value
