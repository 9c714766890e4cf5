"""Screenshot of TensorBoard's Explain tab, for the README: ``python examples/screenshot_dashboard.py LOGDIR``.

Starts ``tensorboard --logdir LOGDIR`` on a free loopback port (the Explain tab comes from the installed package's
entry point), opens the tab in headless Chromium (Debian's ``chromium``, driven by playwright: no download), picks
the runs and the method, and writes ``docs/dashboard.png``. ``make demo`` writes the demo's two runs first:

    python examples/shortcut_detection.py && python examples/screenshot_dashboard.py runs/shortcut_demo

Given an HTML report instead of a log dir (``lightning-explain report ... -o report.html``), it screenshots the
report's page the same way (``--out docs/html_report.png``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_tensorboard(logdir: str, port: int) -> subprocess.Popen[bytes]:
    code = "import sys; from tensorboard.main import run_main; sys.argv[0] = 'tensorboard'; run_main()"
    args = [sys.executable, "-c", code, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing", timeout=5).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("TensorBoard did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--run", help="the run to show (default: the first, e.g. shortcut/seed0)")
    parser.add_argument("--compare", help="a second run, side by side (default: the second run, if any)")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--size", type=int, default=56, help="cell size in pixels")
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    report = args.logdir.endswith(".html")
    proc = None if report else start_tensorboard(args.logdir, port := free_port())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            if report:
                page.goto(Path(args.logdir).resolve().as_uri())
                frame: Any = page
            else:
                page.goto(f"http://127.0.0.1:{port}/#lightning_explain")
                frame = page.frame_locator("iframe")
            frame.locator(".lx-strip").first.wait_for()
            runs = frame.locator("select.lx-run option").all_text_contents()
            run = args.run or runs[0]
            other = args.compare or next((r for r in runs if r != run), "")
            frame.locator("select.lx-run").select_option(run)
            frame.locator("select.lx-run-b").select_option(other)
            frame.locator("select.lx-method").select_option(args.method)
            frame.locator("input.lx-size").evaluate(
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", args.size
            )
            frame.locator(f'.lx-strip[data-run="{other or run}"]').wait_for()
            time.sleep(1.5)  # the visible cells load lazily
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
