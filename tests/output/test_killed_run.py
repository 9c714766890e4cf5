"""A run killed with SIGKILL while its background writer holds images: the event files it leaves are read by
TensorBoard's EventAccumulator, by ``lightning-explain report`` and by the dashboard without an error, and each serves
the complete records; so does a real event file cut at every record boundary and at many offsets in between."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event

from lightning_explain.dashboard.data import Logdir
from lightning_explain.report import write_report

WORKER = Path(__file__).with_name("killed_worker.py")


def _spans(data: bytes) -> list[tuple[int, int, Event]]:
    """``(start, end, Event)`` of each complete record of an event file's bytes."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        if pos + 16 + length > len(data):
            break
        out.append((pos, pos + 16 + length, Event.FromString(data[pos + 12 : pos + 12 + length])))
        pos += 16 + length
    return out


def _image_steps(events: list[Event], tag: str) -> list[int]:
    return sorted(e.step for e in events if any(v.tag == tag and v.HasField("image") for v in e.summary.value))


def _accumulator_steps(folder: Path, tag: str) -> list[int]:
    acc = EventAccumulator(str(folder), size_guidance={"images": 0})
    acc.Reload()
    return sorted(e.step for e in acc.Images(tag)) if tag in acc.Tags()["images"] else []


def _dashboard_steps(root: Path, run: str, tag: str) -> list[int]:
    logdir = Logdir(root, rescan_seconds=0)
    if run not in [r["name"] for r in logdir.runs()["runs"]]:
        return []
    view = next((v for v in logdir.run(run)["views"] if v["tag"] == tag), None)
    if view is None:
        return []
    for _, step in view["frames"]:  # every frame it lists is served
        assert logdir.cell(run, tag, str(step), "0", "1").startswith(b"\x89PNG")
    return sorted(step for _, step in view["frames"])


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("killed")
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(root / "tb")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    pending = -1
    try:
        assert worker.stdout is not None
        deadline = time.monotonic() + 240
        for line in worker.stdout:
            if line.startswith("PENDING ") and int(line.split()[1]) > 0:
                pending = int(line.split()[1])
                worker.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the worker never held images"
    finally:
        worker.kill()
        worker.wait(60)
    assert worker.returncode == -signal.SIGKILL
    (event_file,) = (root / "tb" / "killed" / "v0").glob("*tfevents*")
    return {"root": root / "tb", "file": event_file, "pending": pending}


def test_a_killed_runs_event_file_is_read_by_every_reader(killed, tmp_path):
    assert killed["pending"] > 0  # images were still queued when the process died
    data = killed["file"].read_bytes()
    complete = [e for _, _, e in _spans(data)]
    logged = _image_steps(complete, "explain/gradcam")
    assert len(logged) >= 2
    folder = killed["file"].parent
    assert _accumulator_steps(folder, "explain/gradcam") == logged
    assert _dashboard_steps(killed["root"], "killed/v0", "explain/gradcam") == logged
    page = write_report(killed["root"], tmp_path / "report.html", quiet=True).read_text()
    assert all(f"tile?run=killed/v0&tag=explain/gradcam&step={step}&part=maps" in page for step in logged)


def test_an_event_file_cut_anywhere_serves_its_complete_records(killed, tmp_path):
    """Every record boundary, the bytes around it and a spread of offsets inside records: EventAccumulator and the
    dashboard read each cut without an error and list exactly the grids whose records are complete."""
    data = killed["file"].read_bytes()
    spans = _spans(data)
    layouts = {e.step for _, _, e in spans if any(v.tag.endswith("/layout/text_summary") for v in e.summary.value)}
    cuts = sorted({c for start, end, _ in spans for c in (start, start + 5, start + 12, (start + end) // 2, end - 1)})
    cuts = [c for c in cuts if 0 < c < len(data)]
    assert len(cuts) > 40
    run = tmp_path / "cut"
    run.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn tail is not damage: no warning either
        for cut in cuts:
            for old in run.iterdir():
                old.unlink()
            (run / killed["file"].name).write_bytes(data[:cut])
            complete = [e for _, end, e in spans if end <= cut]
            expected = _image_steps(complete, "explain/gradcam")
            assert _accumulator_steps(run, "explain/gradcam") == expected, cut
            has_layout = any(e.step in layouts for e in complete)  # each layout text precedes its epoch's grids
            assert _dashboard_steps(tmp_path, "cut", "explain/gradcam") == (expected if has_layout else []), cut
