"""``python -m lightning_explain``: the same as the ``lightning-explain`` console command."""

from lightning_explain.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
