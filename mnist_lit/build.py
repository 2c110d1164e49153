"""The one builder: a config, composed by Hydra or read back from a checkpoint, becomes the
LightningModule, the DataModule and the Trainer, for train, evaluate, predict and `load` alike."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lit.checkpoint import read
from mnist_lit.config import Config
from mnist_lit.data import MNISTDataModule
from mnist_lit.module import Classifier


def classifier(cfg: DictConfig) -> Classifier:
    # _convert_="all": plain lists and dicts, so that checkpoints hold no OmegaConf objects.
    net = instantiate(cfg.model, _convert_="all")
    module = Classifier(net, instantiate(cfg.loss), instantiate(cfg.optimizer, _convert_="all"), cfg.capture)
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    return module


def datamodule(cfg: DictConfig) -> MNISTDataModule:
    return instantiate(cfg.data)


def trainer(cfg: DictConfig, **arguments: Any) -> L.Trainer:
    """The config's Trainer; `arguments` add to or replace its settings."""
    return instantiate(cfg.trainer, logger=False, enable_model_summary=False, **arguments)


def config_of(hyper_parameters: Mapping[str, Any]) -> DictConfig:
    """The config a checkpoint's (or a restored module's) hyper-parameters hold; keys added since
    it was trained take their defaults."""
    return OmegaConf.merge(OmegaConf.structured(Config), dict(hyper_parameters))


def restore(path: str | Path, key: str = "checkpoint", map_location: str | torch.device = "cpu") -> Classifier:
    """The trained Classifier of a run directory or .ckpt file, rebuilt from the checkpoint alone."""
    checkpoint = read(path, key, map_location)
    module = classifier(config_of(checkpoint["hyper_parameters"]))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
