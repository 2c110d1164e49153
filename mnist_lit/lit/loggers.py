"""What a run sends to TensorBoard, MLflow or W&B beside its own files: the epoch metrics that History
records (one path for metrics.csv and every logger) and the pictures the run draws. Lightning
sends the hyper-parameters, the run's whole config, itself."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image


def set_up_wandb(offline: bool) -> dict[str, Any]:
    """W&B's own settings, for WandbLogger's `settings`: no banners or notices, and the run's console
    left to the run. Set up before Lightning's WandbLogger starts W&B, which warns about its
    arguments otherwise."""
    import wandb

    settings = wandb.Settings(silent=True, console="off", mode="offline" if offline else "online")
    wandb.setup(settings)
    return {"silent": True, "console": "off", "mode": settings.mode}


def send_metrics(loggers: Sequence[Logger], metrics: dict[str, float], epoch: int) -> None:
    """`epoch` counts from 1, as the epoch lines and metrics.csv do."""
    for logger in loggers:
        logger.log_metrics(metrics, step=epoch)


def send_picture(loggers: Sequence[Logger], path: Path, epoch: int) -> None:
    """A picture the run wrote, as TensorBoard and W&B show images and MLflow keeps artifacts."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            with Image.open(path) as image:
                logger.experiment.add_image(path.stem, np.asarray(image.convert("RGB")), epoch, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):
            logger.log_image(path.stem, [str(path)], step=epoch)


def close(loggers: Sequence[Logger]) -> None:
    """Everything sent is written out, the pictures drawn after training too; a W&B run is finished
    (Lightning's finalize leaves it open, and a sweep's next job would log into it)."""
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
