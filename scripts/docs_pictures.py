"""Re-make every picture in docs/ from a real run: nothing in the documentation is drawn by hand.

- ``docs/gradcam_epochs.png``: the demo's Grad-CAM grids (``explain/gradcam``, as logged to TensorBoard): the first
  three probe images of the "shortcut" model at its first and last epoch and of the "clean" model at its last epoch.
- ``docs/html_report.png``: the top of the HTML report of the demo's clean run (``lightning-explain report``) in
  headless Chromium (Debian's ``chromium`` driven by playwright, no browser download), the first method's slider
  (the channel activations) moved to epoch 1.

Run (about two minutes on 2 CPU cores; it trains the demo's two models with the default settings)::

    make pictures                          # or: .venv/bin/python scripts/docs_pictures.py [--out docs]
    .venv/bin/python scripts/docs_pictures.py --from runs/shortcut_demo/version_0   # from a demo run already made
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whichever is installed

from lightning_explain.report import write_report  # noqa: E402
from lightning_explain.report.events import Frame, read_run  # noqa: E402
from lightning_explain.tools import demo  # noqa: E402

ROWS = 3  # probe images shown per panel
TITLE = 18  # px of the panel titles
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]


def _rows(frame: Frame, count: int) -> Image.Image:
    """The first ``count`` probe rows of a logged grid."""
    grid = Image.open(io.BytesIO(frame.png)).convert("RGB")
    top = frame.rows[0][0]
    bottom = frame.rows[min(count, len(frame.rows)) - 1]
    return grid.crop((0, top, grid.width, bottom[0] + bottom[1]))


def gradcam_epochs(runs: dict[str, Path], out: Path) -> Path:
    """Three panels side by side, each titled with the run and epoch."""
    frames = {name: read_run(path, name).images["explain/gradcam"] for name, path in runs.items()}
    shortcut, clean = frames["shortcut"], frames["clean"]
    panels = [
        (f"shortcut, epoch {shortcut[0].epoch}", _rows(shortcut[0], ROWS)),
        (f"shortcut, epoch {shortcut[-1].epoch}", _rows(shortcut[-1], ROWS)),
        (f"clean, epoch {clean[-1].epoch}", _rows(clean[-1], ROWS)),
    ]
    gap = 12
    width = sum(p.width for _, p in panels) + gap * (len(panels) - 1)
    height = TITLE + max(p.height for _, p in panels)
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    x = 0
    for title, panel in panels:
        draw.text((x + 2, 3), title, fill="black")
        picture.paste(panel, (x, TITLE))
        x += panel.width + gap
    path = out / "gradcam_epochs.png"
    picture.save(path, optimize=True)
    return path


def report_screenshot(run: Path, out: Path, work: Path) -> Path:
    """The report of ``run`` in headless Chromium, the slider at epoch 1."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("the report screenshot needs Debian's chromium (make browser installs it)")
    report = write_report(run, work / "report.html", quiet=True)
    path = out / "html_report.png"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(work / "profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1352, "height": 858},
        )
        try:
            page = context.new_page()
            page.goto(report.as_uri())
            slider = page.locator("input.slider").first
            slider.evaluate("(el) => { el.value = 1; el.dispatchEvent(new Event('input')); }")
            page.screenshot(path=str(path))
        finally:
            context.close()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the pictures go (docs/)")
    parser.add_argument("--from", dest="source", type=Path, help="a demo run's OUT/version_N instead of a new run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.source is not None:
            runs = {name: next((args.source / name).iterdir()) for name in ("shortcut", "clean")}
        else:
            summary = demo.main(["--out", str(work / "demo"), "--quiet"])
            runs = {name: Path(run["log_dir"]) for name, run in summary["runs"].items()}
        print(gradcam_epochs(runs, args.out))
        print(report_screenshot(runs["clean"], args.out, work))


if __name__ == "__main__":
    main()
