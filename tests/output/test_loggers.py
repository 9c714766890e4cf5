"""Images reach real loggers: W&B (offline), MLflow (local file store), CSVLogger and no logger (PNG folders).

Each test trains TinyCNN for two epochs and reads back what the logger wrote, comparing pixels with the grids
TensorBoard received in the same run (or, without TensorBoard, with the probe images themselves).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TinyCNN, loaders, probe_rows_match, read_event_images, require_module, trainer
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightning_explain import ExplainCallback
from lightning_explain.output.sinks import image_capable

TAGS = ("explain/activations", "explain/gradcam", "explain/saliency")
EPOCHS = 2


def _fit(tmp_path: Path, logger, **kwargs) -> ExplainCallback:
    callback = ExplainCallback("features.3", num_probe=3, cell_size=32, **kwargs)
    train, val = loaders(n=16, size=16)
    trainer(tmp_path, max_epochs=EPOCHS, logger=logger, callbacks=[callback], log_every_n_steps=1).fit(
        TinyCNN(), train, val
    )
    return callback


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _png_tree(folder: Path) -> dict[str, list[Path]]:
    """tag -> PNG files in epoch order, from ``folder/<tag>/epoch=EEEE-step=SSSSSSS.png``."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.png")):
        out.setdefault(path.parent.relative_to(folder).as_posix(), []).append(path)
    return out


def test_csv_logger_gets_png_folders_next_to_metrics_csv(tmp_path):
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    assert not image_capable(logger)
    with pytest.warns(UserWarning, match="are written as PNG files under .*explain_images"):
        callback = _fit(tmp_path, logger)
    log_dir = Path(logger.log_dir)
    assert (log_dir / "metrics.csv").is_file()
    metrics = (log_dir / "metrics.csv").read_text()
    assert "explain/gradcam/drift/emd_prev" in metrics.splitlines()[0]
    tree = _png_tree(log_dir / "explain_images")
    assert set(tree) == set(TAGS)
    for tag, paths in tree.items():
        assert [p.name for p in paths] == ["epoch=0000-step=0000001.png", "epoch=0001-step=0000003.png"], tag
        for path in paths:
            probe_rows_match(_rgb(path), callback._probe.images, 32)  # type: ignore[union-attr]


def test_no_logger_writes_pngs_under_default_root_dir(tmp_path):
    with pytest.warns(UserWarning, match="PNG files under"):
        callback = _fit(tmp_path, False)
    tree = _png_tree(tmp_path / "explain_images")
    assert set(tree) == set(TAGS) and all(len(paths) == EPOCHS for paths in tree.values())
    probe_rows_match(_rgb(tree["explain/gradcam"][-1]), callback._probe.images, 32)  # type: ignore[union-attr]
    # The overlay cell is not the plain input: a map was drawn over it.
    grid = _rgb(tree["explain/gradcam"][-1])
    assert not np.array_equal(grid[14:46, 2:34], grid[14:46, 36:68])


def test_wandb_and_mlflow_receive_the_same_grids_as_tensorboard(tmp_path, monkeypatch):
    require_module("wandb")
    require_module("mlflow")
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger, WandbLogger

    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 otherwise wants a database for tracking
    tracking = (tmp_path / "mlruns").as_uri()
    tb = TensorBoardLogger(str(tmp_path / "tb"), name="", version="")
    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="explain-test")
    mlflow_logger = MLFlowLogger(experiment_name="explain-test", tracking_uri=tracking)
    assert all(image_capable(lg) for lg in (tb, wandb_logger, mlflow_logger))
    try:
        _fit(tmp_path, [tb, wandb_logger, mlflow_logger])
    finally:
        wandb_logger.experiment.finish()
    logged = read_event_images(tb.log_dir)
    assert set(logged) == set(TAGS) and all(len(v) == EPOCHS for v in logged.values())

    # W&B: media/images/<tag>_<wandb step>_<hash>.png, one per epoch, in logging order.
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media" / "images"
    for tag in TAGS:
        files = sorted(
            media.glob(f"{tag}_*.png"), key=lambda p: int(re.search(r"_(\d+)_[0-9a-f]+\.png$", p.name).group(1))
        )
        assert len(files) == EPOCHS, tag
        for path, (_, pixels) in zip(files, logged[tag], strict=True):
            assert np.array_equal(_rgb(path), pixels)

    # MLflow: MlflowClient.log_image artifacts images/<tag with ~>+step+<step>+..., at the global step.
    client = MlflowClient(tracking)
    artifacts = [a.path for a in client.list_artifacts(mlflow_logger.run_id, "images")]
    for tag in TAGS:
        for step, pixels in logged[tag]:
            names = [a for a in artifacts if a.startswith(f"images/{tag.replace('/', '~')}+step+{step}+")]
            png = [a for a in names if a.endswith(".png")]
            assert len(png) == 1, (tag, step, names)
            local = client.download_artifacts(mlflow_logger.run_id, png[0], str(tmp_path / "download"))
            assert np.array_equal(_rgb(Path(local)), pixels)
    # The scalars went to MLflow as well.
    history = client.get_metric_history(mlflow_logger.run_id, "explain/gradcam/drift/emd_prev")
    assert len(history) == EPOCHS - 1
