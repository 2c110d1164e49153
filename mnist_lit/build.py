"""The one builder: a config, composed by Hydra or read back from a checkpoint, becomes the
LightningModule, the DataModule and the Trainer, for train, evaluate, predict and `load` alike."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from mnist_lit.checkpoint import read
from mnist_lit.config.checks import config_of
from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.lit.module import Classifier

# Trainer arguments that count batches or act on gradients: the module and the DataModule honour
# them in mini-batches (Lightning would count executions, or refuses them with manual optimization).
FOR_THE_MODULE = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
STAGES = ("train", "val", "test", "predict")
FOR_THE_DATA = tuple(f"limit_{stage}_batches" for stage in STAGES)
# The run's own Timer (train.py) keeps the time, and stops the run at max_time.
FOR_THE_TIMER = ("max_time",)


def classifier(cfg: DictConfig) -> Classifier:
    # _convert_="all": plain lists and dicts, so that checkpoints hold no OmegaConf objects.
    net = instantiate(cfg.model, _convert_="all")
    optimization = {name: cfg.trainer[name] for name in FOR_THE_MODULE}
    module = Classifier(net, instantiate(cfg.loss), instantiate(cfg.optimizer, _convert_="all"), cfg.capture, **optimization)
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    return module


def datamodule(cfg: DictConfig, limited: bool = True) -> MNISTDataModule:
    """`limited`: as the config's trainer.limit_*_batches say; else whole splits."""
    limits = {stage: cfg.trainer[f"limit_{stage}_batches"] for stage in STAGES} if limited else {}
    if limited and cfg.trainer.fast_dev_run:
        # Lightning runs N batches of each loop: N mini-batches here, as every limit counts them.
        limits = dict.fromkeys(STAGES, int(cfg.trainer.fast_dev_run))
    return instantiate(cfg.data, limits=limits)


def trainer(cfg: DictConfig, **arguments: Any) -> L.Trainer:
    """The config's Trainer; `arguments` add to or replace its settings."""
    honoured = FOR_THE_MODULE + FOR_THE_DATA + FOR_THE_TIMER
    settings = OmegaConf.masked_copy(cfg.trainer, [k for k in cfg.trainer if k not in honoured])
    # A limit of 0 turns a loop off, as in Lightning.
    translated: dict[str, Any] = {name: 0 for name in FOR_THE_DATA if cfg.trainer[name] == 0}
    interval = cfg.trainer.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool):
        # Every `interval` mini-batches: every so many executions (validate checks it divides).
        translated["val_check_interval"] = interval // cfg.data.steps_per_execution
    return instantiate(settings, **{"logger": False, **translated, **arguments})


def loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    """The config's logger, writing inside the run's directory unless it names a tracking server."""
    if not cfg.get("logger"):
        return []
    run = Path(output_dir).resolve()
    where: dict[str, str] = {}
    if "save_dir" in cfg.logger:
        where["save_dir"] = str(run / cfg.logger.save_dir)
    if "tracking_uri" in cfg.logger and cfg.logger.tracking_uri is None:
        # MLflow's own advice: a database, not its file store (which it refuses since 3.x).
        where |= {"tracking_uri": f"sqlite:///{run}/mlflow.db", "artifact_location": str(run / "mlartifacts")}
    if "run_name" in cfg.logger and cfg.logger.run_name is None:
        where["run_name"] = os.path.relpath(run)
    return [instantiate(cfg.logger, **where)]


def restore(
    path: str | Path,
    key: str = "checkpoint",
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> Classifier:
    """The trained Classifier of a run directory or .ckpt file, rebuilt from the project's own
    choices as the checkpoint's config names them (checkpoint.read checks it); `overrides`
    replace top-level keys of that config, checked by the same rules."""
    checkpoint = read(path, key, map_location)
    cfg = checkpoint["config"]
    if overrides:
        cfg = config_of({**checkpoint["hyper_parameters"], **overrides}, f"{key}={path}")
    module = classifier(cfg)
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    return module.eval()


Classifier.restore = restore
