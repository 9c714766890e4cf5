"""The release: the wheel holds everything the package reads at run time, installs into a fresh virtual environment
and runs the quick start there, with the source tree out of reach.

The wheel is built (``python -m build --no-isolation``) from a copy of the files an sdist holds. The fresh
environment is made with ``venv`` from the test interpreter, and gets the wheel (``pip --python ... --no-deps``,
no index) and, for its dependencies (torch, Lightning, ...), a ``.pth`` line naming the test environment's
site-packages: such a path is searched after the environment's own site-packages, and the ``.pth`` files inside it
(the editable install of the checkout) are not read, so ``lightning_explain`` can only come from the wheel. The
quick start runs from an empty working directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import lightning_explain

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_explain"
#: What the sdist carries besides the package (MANIFEST.in, pyproject's readme and license).
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in")

QUICK_START = r"""
import importlib.metadata, pathlib, sys
import lightning_explain
from lightning_explain import ExplainCallback
assert pathlib.Path(lightning_explain.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve()), (
    lightning_explain.__file__
)
assert importlib.metadata.version("lightning-explain") == lightning_explain.__version__

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 3))
    def forward(self, x):
        return self.net(x)
    def training_step(self, batch, i):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])
    def validation_step(self, batch, i):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

data = DataLoader(TensorDataset(torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), batch_size=4)
trainer = pl.Trainer(max_epochs=1, callbacks=ExplainCallback(num_probe=3), accelerator="cpu", devices=1,
                     logger=pl.loggers.TensorBoardLogger("runs"), enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False)
trainer.fit(Model(), data, data)
print("quick start ran from", lightning_explain.__file__)
"""


def _data_files() -> set[str]:
    """Every file of the package that is not Python source: what package-data must carry."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "lightning_explain", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1 and len(list(out.glob("*.tar.gz"))) == 1  # a wheel and an sdist
    return wheels[0]


def test_the_wheel_holds_every_file_the_package_reads_and_one_version(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert _data_files() <= names, sorted(_data_files() - names)
    assert {"lightning_explain/py.typed", "lightning_explain/report/report.css"} <= names
    assert wheel.name.startswith(f"lightning_explain-{lightning_explain.__version__}-")
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert f"Version: {lightning_explain.__version__}\n" in text
    assert "Provides-Extra: all" in text and "Project-URL: Documentation" in text
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lightning-explain = lightning_explain.tools.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow  # about 40 s on 2 cores: a build, a fresh environment, a Lightning import and a fit
def test_the_wheel_installs_into_a_fresh_environment_and_runs_the_quick_start(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies_of_the_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet"]
    subprocess.run([*pip, str(wheel)], check=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    ran = subprocess.run([str(python), "-c", QUICK_START], cwd=work, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"quick start ran from {venv}" in ran.stdout or str(Path(site)) in ran.stdout
    assert list((work / "runs").rglob("events.out.tfevents.*"))

    # The console script of the wheel, with the report's CSS and JS read from the installed package.
    script = venv / ("Scripts/lightning-explain.exe" if os.name == "nt" else "bin/lightning-explain")
    report = subprocess.run(
        [str(script), "report", "runs", "-o", "report.html", "-q"], cwd=work, env=env, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "<style>" in (work / "report.html").read_text()
