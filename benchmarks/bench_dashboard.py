"""The Explain dashboard: first paint of a large run, TensorBoard's start-up with and without it, report size.

1. A synthetic run of ``--epochs`` (100) explained epochs x ``--images`` (16) probe images x 5 methods (grids of
   32 px images in 128 px cells, rendered by the package's own ``explanation_grid``, with their layout text,
   captions, per-image numbers and chart scalars), written straight to an event file (seconds, no training).
   TensorBoard serves it; headless Chromium (Debian's ``chromium``, driven by playwright) opens TensorBoard on
   another tab, then the Explain tab is clicked and timed until every film-strip cell on screen is decoded.
   Printed: that time (goal < 1 s) and the bytes the tab fetched for it (goal < 2 MB). TensorBoard loads its own
   data once before serving here (``--reload_interval 0 --reload_task blocking``), so that its first load of the
   100 MB run does not compete for the CPU with the measured clicks.
2. TensorBoard's start-up (process start to the first ``/data/plugins_listing`` answer, then the scalars tab's
   ``/data/plugin/scalars/tags``) on the same log dir, with TensorBoard's plugins only and with the Explain plugin
   added, interleaved ``--repeats`` times; medians.
3. The HTML report's bytes per explained epoch at the defaults (Grad-CAM, saliency, activations; 16 images, 128 px
   cells) for the synthetic run, and for ``--demo LOGDIR`` (``make demo``'s log dir) when given, against the
   previous report format (whole grids per epoch) built from the same event files.

Run: ``make bench-dashboard`` or ``.venv/bin/python benchmarks/bench_dashboard.py`` (``--epochs 20`` for a
quicker run; ``--demo runs/shortcut_demo/version_0``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

METHODS = ("gradcam", "saliency", "smoothgrad", "integrated_gradients", "activations")
REPORT_METHODS = ("gradcam", "saliency", "activations")
TOP_K = 3
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _smooth(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` smooth random maps ``[n, size, size]`` in [0, 1] (a few Gaussian blobs each)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, size, size)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.rand(2, generator=generator) * size
            out[i] += torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (size / 6) ** 2))
    return out / out.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]


def write_run(folder: Path, epochs: int, images: int, methods: tuple[str, ...], size: int = 32) -> None:
    """An event file as ExplainCallback writes it (grids, layout text with captions and numbers, scalars)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from lightning_explain.dashboard.summary import layout_extras
    from lightning_explain.epoch.grids import layout_json
    from lightning_explain.output.render import explanation_grid
    from lightning_explain.output.sinks import encode_png

    generator = torch.Generator().manual_seed(0)
    display = (
        torch.rand(images, 3, size, size, generator=generator) * 0.3 + _smooth(images, size, generator)[:, None] * 0.7
    )
    captions = [f"#{i} y=c{i % 3} p=c{i % 3}" for i in range(images)]
    variants = 4  # distinct grids per method, cycled over the epochs (PNG bytes as large as real ones)
    pngs: dict[str, list[bytes]] = {}
    grids: dict[str, torch.Tensor] = {}
    for m in methods:
        pngs[m] = []
        for _ in range(variants):
            maps = _smooth(images * (TOP_K if m == "activations" else 1), size, generator)
            maps = maps.view(images, TOP_K, size, size) if m == "activations" else maps
            grid = explanation_grid(display, maps, captions, cell_size=128)
            grids[f"explain/{m}"] = grid
            pngs[m].append(encode_png(grid))
    writer = EventFileWriter(str(folder))
    text_meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    for epoch in range(epochs):
        step = 10 * (epoch + 1)
        numbers = {f"explain/{m}/focus/border_lift": torch.rand(images, generator=generator) for m in methods[:-1]}
        numbers.update({f"explain/{m}/drift/emd_prev": torch.rand(images, generator=generator) for m in methods[:-1]})
        extras = layout_extras(
            [i % 3 for i in range(images)],
            [i % 3 for i in range(images)],
            [i % 3 for i in range(images)],
            lambda k: f"c{k}",
            numbers,
            "explain",
        )
        layout = layout_json(grids, (size, size), 128, epoch, step, extras)
        text = TensorProto(
            dtype=7, string_val=[layout.encode()], tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)])
        )
        values = [Summary.Value(tag="explain/layout/text_summary", metadata=text_meta, tensor=text)]
        for m in methods:
            png = pngs[m][epoch % variants]
            grid = grids[f"explain/{m}"]
            values.append(
                Summary.Value(
                    tag=f"explain/{m}",
                    image=Summary.Image(
                        height=grid.shape[1], width=grid.shape[2], colorspace=3, encoded_image_string=png
                    ),
                )
            )
        writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        scalars = [Summary.Value(tag="epoch", simple_value=float(epoch))]
        scalars += [Summary.Value(tag=k, simple_value=float(v.median())) for k, v in numbers.items()]
        writer.add_event(Event(wall_time=time.time(), step=step - 1, summary=Summary(value=scalars)))
        fired = 1.0 if epoch >= epochs // 3 else 0.0
        alert = Summary(
            value=[Summary.Value(tag="focus_alert/explain/gradcam/focus/border_lift/fired", simple_value=fired)]
        )
        writer.add_event(Event(wall_time=time.time(), step=step, summary=alert))
    writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LAUNCH = """
import sys
from importlib.metadata import entry_points
from tensorboard import default, program
if sys.argv[1] == "with":
    plugins = default.get_plugins()  # TensorBoard's own and the entry points' (ours among them)
else:  # as if the package were not installed: our entry point is not even imported
    plugins = default.get_static_plugins() + [
        ep.load() for ep in entry_points(group="tensorboard_plugins") if ep.name != "lightning_explain"
    ]
tb = program.TensorBoard(plugins=plugins)
argv = ["tensorboard", "--logdir", sys.argv[2], "--host", "127.0.0.1", "--port", sys.argv[3], "--load_fast", "false",
        "--reload_interval", sys.argv[4]] + (["--reload_task", "blocking"] if sys.argv[4] == "0" else [])
tb.configure(argv=argv)
tb.main()
"""


def start(logdir: Path, plugin: bool = True, reload: str = "5") -> tuple[subprocess.Popen[bytes], str, float, float]:
    """TensorBoard in a subprocess; returns (process, url, seconds to the plugin listing, to the scalar tags).

    ``reload="0"``: TensorBoard's own loader reads the event files once, before it serves (``--reload_task
    blocking``), so that a measurement of the Explain tab is not slowed by that first load of 100 MB into
    TensorBoard's other dashboards (the steady state of a TensorBoard that has been open a while)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (read back only when the process fails; closed with it)
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "with" if plugin else "without", str(logdir), str(port), reload],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    while True:
        try:
            urllib.request.urlopen(url + "/data/plugins_listing", timeout=30).read()
            break
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"TensorBoard did not start: {log.read().decode()[-3000:]}") from None
            time.sleep(0.02)
    listing = time.perf_counter() - t0
    urllib.request.urlopen(url + "/data/plugin/scalars/tags", timeout=30).read()
    return proc, url, listing, time.perf_counter() - t0


# Every film-strip column a user can see (inside the window and inside its strip's horizontally scrolled box: columns
# past the box's right edge are clipped, not on screen) is decoded.
PAINTED = """() => {
  const imgs = [...document.querySelectorAll('.lx-strip img.lx-tile')];
  const onScreen = imgs.filter(i => { const r = i.getBoundingClientRect();
    const box = i.closest('.lx-scroll').getBoundingClientRect();
    return r.bottom > Math.max(0, box.top) && r.top < Math.min(innerHeight, box.bottom)
      && r.right > Math.max(0, box.left) && r.left < Math.min(innerWidth, box.right); });
  return onScreen.length > 0 && onScreen.every(i => i.complete && i.naturalWidth > 0);
}"""


def first_paint(url: str) -> tuple[float, int, int, int]:
    """(seconds from the click on the Explain tab to a painted film strip, bytes fetched, requests, columns loaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/#scalars")
        page.wait_for_load_state("networkidle")
        fetched: list[int] = []
        page.on(
            "requestfinished",
            lambda r: fetched.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]),
        )
        t0 = time.perf_counter()
        page.get_by_text("Explain", exact=True).first.click()
        frame = None
        while frame is None:
            frame = next((f for f in page.frames if "plugin_entry" in f.url), None)
            time.sleep(0.005)
        frame.wait_for_function(PAINTED, polling=10, timeout=600_000)
        seconds = time.perf_counter() - t0
        cells = frame.evaluate("() => document.querySelectorAll('.lx-strip img.lx-tile[src]').length")
        browser.close()
    return seconds, sum(fetched), len(fetched), cells


def report_sizes(logdir: Path, epochs: int) -> tuple[float, float]:
    """(new report bytes per epoch, previous report bytes per epoch) for the runs under ``logdir``."""
    from lightning_explain.dashboard.offline import dashboard_html
    from lightning_explain.report.events import find_runs, read_run
    from lightning_explain.report.page import render_html

    new = len(dashboard_html(logdir, "bench").encode())
    runs = [read_run(p, str(p.relative_to(logdir))) for p in find_runs(logdir)]
    old = len(render_html(runs, "bench").encode())
    return new / epochs, old / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", type=Path, help="make demo's log dir (e.g. runs/shortcut_demo/version_0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        write_run(root / "big" / "run", args.epochs, args.images, METHODS)
        size = sum(p.stat().st_size for p in (root / "big").rglob("*tfevents*"))
        print(
            f"synthetic run: {args.epochs} epochs x {args.images} images x {len(METHODS)} methods, "
            f"{size / 1e6:.0f} MB of events, written in {time.perf_counter() - t:.1f} s"
        )

        proc, url, _, _ = start(root / "big", reload="0")
        try:
            urllib.request.urlopen(url + "/data/plugin/lightning_explain/runs", timeout=120).read()  # index once
            paints = [first_paint(url) for _ in range(args.repeats)]
        finally:
            proc.kill()
        seconds = statistics.median(p[0] for p in paints)
        fetched = statistics.median(p[1] for p in paints)
        print(
            f"first paint of the Explain tab: {seconds:.2f} s (goal < 1 s), {fetched / 1e6:.2f} MB fetched "
            f"(goal < 2 MB) in {paints[0][2]} requests, {paints[0][3]} columns loaded (median of {args.repeats})"
        )

        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for plugin in (False, True):
                proc, _, listing, tags = start(root / "big", plugin)
                proc.kill()
                proc.wait()
                times[plugin].append((listing, tags))
        for plugin in (False, True):
            listing = statistics.median(t[0] for t in times[plugin])
            tags = statistics.median(t[1] for t in times[plugin])
            print(
                f"TensorBoard start-up {'with' if plugin else 'without'} the Explain plugin: plugins listed after "
                f"{listing:.2f} s, scalar tags after {tags:.2f} s"
            )

        small = root / "report"
        report_epochs = 10
        write_run(small / "run", report_epochs, args.images, REPORT_METHODS)
        new, old = report_sizes(small, report_epochs)
        print(
            f"HTML report, synthetic defaults ({args.images} images, 128 px cells, {'/'.join(REPORT_METHODS)}): "
            f"{new / 1e6:.2f} MB per epoch (goal < 0.5 MB), previous format {old / 1e6:.2f} MB per epoch"
        )
    if args.demo is not None:
        summary = json.loads((args.demo / "summary.json").read_text()) if (args.demo / "summary.json").is_file() else {}
        epochs = max(len(r.get("epochs", [])) for r in summary.get("runs", {}).values()) if summary else 6
        runs = len(list(args.demo.rglob("*tfevents*")))
        new, old = report_sizes(args.demo, epochs * max(runs, 1))
        print(
            f"HTML report of {args.demo} ({runs} runs): {new / 1e6:.2f} MB per run-epoch, "
            f"previous format {old / 1e6:.2f} MB per run-epoch"
        )


if __name__ == "__main__":
    main()
