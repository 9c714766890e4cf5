"""Both Lightning packages: ``import lightning as L`` and ``import pytorch_lightning as pl``.

Every callback is an instance of both namespaces' ``Callback``; a single callback (not a list) works with either
``Trainer``; LightningCLI of either package builds the callbacks from YAML and from ``--trainer.callbacks+=``; and
the package works when only one of the two is installed (the other's import blocked in a fresh interpreter).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import read_event_images, require_module
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_explain
import lightning_explain.callbacks as callbacks

L = require_module("lightning")
import lightning.pytorch as lp  # noqa: E402
import pytorch_lightning as pl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [*callbacks.__all__])
def test_every_callback_is_a_callback_of_both_namespaces(name):
    cls = getattr(callbacks, name)
    assert issubclass(cls, pl.Callback) and issubclass(cls, lp.Callback)


def _model(namespace):
    class Net(namespace.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.features(x))

        def training_step(self, batch, i):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, i):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Net()


@pytest.mark.parametrize("namespace", [lp, pl], ids=["lightning", "pytorch_lightning"])
def test_a_single_callback_works_with_either_trainer(namespace, tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g))
    trainer = namespace.Trainer(
        max_epochs=1,
        callbacks=lightning_explain.ExplainCallback(num_probe=2),  # one callback, not a list
        logger=namespace.loggers.TensorBoardLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_model(namespace), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    images = read_event_images(trainer.logger.log_dir)
    assert {"explain/gradcam", "explain/saliency", "explain/activations"} <= set(images)


CLI = """
import sys
from {cli} import LightningCLI
import {ns} as namespace

cli = LightningCLI(namespace.LightningModule, namespace.LightningDataModule, subclass_mode_model=True,
                   subclass_mode_data=True, run=False, args=sys.argv[1:])
print(sorted(type(cb).__name__ for cb in cli.trainer.callbacks if type(cb).__module__.startswith("lightning_explain")))
"""


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_lightning_cli_of_either_package_takes_the_callbacks(package, tmp_path):
    require_module("jsonargparse")
    script = tmp_path / "cli.py"
    script.write_text(CLI.format(cli=f"{package}.cli", ns=package))
    # The demo model follows the unified package when it is installed; LightningCLI checks the model's namespace.
    model = (
        "lightning_explain.tools.demo.SmallCNN" if package == "lightning.pytorch" else "test_lightning_namespaces.PLNet"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            """
            trainer:
              logger: false
              callbacks:
                - class_path: lightning_explain.ExplainCallback
                  init_args: {num_probe: 2}
            model: {class_path: MODEL}
            data: {class_path: lightning_explain.data.ShortcutShapesDataModule, init_args: {image_size: 32}}
            """
        ).replace("MODEL", model)
    )
    extra = [
        "--trainer.callbacks+=lightning_explain.FocusAlert",
        "--trainer.callbacks.monitor=explain/gradcam/focus/lift",
    ]
    if package == "pytorch_lightning":  # the demo model follows the unified package when it is installed
        extra += ["--model", "tests.callbacks.test_lightning_namespaces.PLNet"]
    code = "import sys; sys.path[:0] = ['tests', 'tests/callbacks']; exec(open(sys.argv.pop(1)).read())"
    done = subprocess.run(
        [sys.executable, "-c", code, str(script), "--config", str(config), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['ExplainCallback', 'FocusAlert']"


class PLNet(pl.LightningModule):
    """A pytorch_lightning model for the pytorch_lightning CLI (LightningCLI checks the model's namespace)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


ONLY = """
import sys
sys.modules[{blocked!r}] = None  # as if it were not installed
{extra}
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import {ns} as namespace
import lightning_explain
from lightning_explain import ExplainCallback, FocusAlert
assert all(isinstance(c, namespace.Callback) for c in (ExplainCallback(), FocusAlert("explain/gradcam/focus/lift")))

class Net(namespace.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    def forward(self, x):
        return self.net(x)
    def training_step(self, batch, i):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])
    def validation_step(self, batch, i):
        pass
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

data = TensorDataset(torch.rand(4, 3, 16, 16), torch.randint(0, 3, (4,)))
cb = ExplainCallback(num_probe=2, strict=True)
trainer = namespace.Trainer(max_epochs=1, callbacks=cb, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False, default_root_dir={root!r})
trainer.fit(Net(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
assert cb.latest_epoch == 0, cb.latest_epoch
assert {blocked!r} not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""


@pytest.mark.parametrize(
    ("ns", "blocked", "extra"),
    [
        ("lightning.pytorch", "pytorch_lightning", ""),
        ("pytorch_lightning", "lightning", "sys.modules['lightning.pytorch'] = None"),
    ],
    ids=["only-lightning", "only-pytorch_lightning"],
)
def test_works_when_only_one_package_is_installed(ns, blocked, extra, tmp_path):
    code = ONLY.format(blocked=blocked, extra=extra, ns=ns, root=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
