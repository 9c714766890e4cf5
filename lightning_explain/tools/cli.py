"""The ``lightning-explain`` console command: ``demo`` (train the shortcut demo) and ``report`` (HTML report).

    lightning-explain demo --out runs/shortcut_demo [--report runs/shortcut_demo/report.html]
    lightning-explain report runs/shortcut_demo -o report.html
    python -m lightning_explain report LOGDIR -o report.html

Example:
    >>> from lightning_explain.tools.cli import build_parser
    >>> build_parser().parse_args(["report", "runs", "-o", "r.html"]).output
    'r.html'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-explain",
        description="See what a vision model looks at while it trains (lightning_explain).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,report}")
    demo = sub.add_parser(
        "demo",
        help="train the two shortcut-detection demo models and print the focus/alert table",
        description="Train the shortcut-detection demo (lightning_explain.tools.demo); the arguments after 'demo' are "
        "the demo's own (see 'lightning-explain demo --help').",
        add_help=False,
    )
    demo.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    report = sub.add_parser(
        "report",
        help="write one self-contained HTML report (maps across epochs, drift and focus curves) from a log dir",
    )
    report.add_argument("logdir", help="a TensorBoard log dir (every run folder under it is included)")
    report.add_argument("-o", "--output", default="report.html", help="the HTML file to write (report.html)")
    report.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options (argparse's REMAINDER drops leading "--x")
        from lightning_explain.tools.demo import main as demo_main

        demo_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    from lightning_explain.report import write_report

    try:
        path = write_report(args.logdir, args.output, quiet=args.quiet)
    except FileNotFoundError as err:
        print(f"lightning-explain report: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
