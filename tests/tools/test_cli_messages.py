"""What the command line tells a new user: a report with nothing to show fails and says what it looked for; the
commands the demo prints run as printed, even when the environment is not activated."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger

from lightning_explain.tools import demo
from lightning_explain.tools.cli import main


def test_report_on_a_log_dir_without_explanations_exits_non_zero_naming_what_it_looked_for(tmp_path, capsys):
    logger = TensorBoardLogger(str(tmp_path), name="plain")  # a run that logged scalars but no explanation
    logger.log_metrics({"val_loss": 1.0}, step=0)
    logger.finalize("success")
    status = main(["report", str(tmp_path), "-o", str(tmp_path / "report.html"), "-q"])
    assert status != 0
    assert not (tmp_path / "report.html").exists()
    err = capsys.readouterr().err
    assert "hold no images" in err and "'explain/gradcam'" in err and "ExplainCallback" in err


def test_the_commands_the_demo_prints_run_as_printed_without_an_activated_environment(tmp_path, monkeypatch, capsys):
    def fit_without_training(self: Any, *args: object, **kwargs: object) -> None:
        assert self.logger is not None
        self.logger.log_metrics({"epoch": 0.0}, step=0)
        self.logger.finalize("success")

    monkeypatch.setattr(demo.pl.Trainer, "fit", fit_without_training)  # the namespace the demo imported
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bindir)
    monkeypatch.setenv("PATH", path)  # as after `make demo` in a shell without the venv activated
    demo.main(["--out", str(tmp_path), "--epochs", "1", "--train-size", "32", "--image-size", "32", "--quiet"])
    commands = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    programs = {Path(shlex.split(c)[0]).name: shlex.split(c)[0] for c in commands}
    assert set(programs) == {"tensorboard", "lightning-explain"}
    for program in programs.values():
        assert shutil.which(program, path=path) is not None, program  # found by the shell as printed
