"""Checkpoints: written whole or not at all, and checked before a run resumes from one."""

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mnist_lit import files
from mnist_lit.errors import ConfigError

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning stages a checkpoint in the system's temporary directory and moves it into place,
    a copy when that is another file system: a kill -9 then leaves half a file. Write it beside
    its target, flush it to disk, and rename it over the old one instead."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        files.directory(Path(path).parent)
        with files.whole(path, "wb") as f:
            torch.save(checkpoint, f)


def find(path: str | Path, key: str = "resume") -> Path:
    """The checkpoint that `key=path` names: a .ckpt file, or a run directory's last.ckpt."""
    found = Path(path)
    if found.is_dir():
        found = found / "checkpoints" / "last.ckpt"
    if not found.is_file():
        raise ConfigError(
            f"{key}={path}: no such checkpoint; give a run directory (with checkpoints/last.ckpt) or a .ckpt file"
        )
    return found


def read(path: str | Path, key: str = "resume", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint that `key=path` names, loaded; one line naming it if it is none of ours."""
    found = find(path, key)
    try:
        # weights_only: the checkpoint holds tensors and plain containers, and can run no code.
        checkpoint = torch.load(found, map_location=map_location, weights_only=True)
        checkpoint["state_dict"], checkpoint["hyper_parameters"]["model"]
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(f"{key}={path}: {found} is not a mnist_lit checkpoint ({type(error).__name__}: {detail})") from None
    return checkpoint


# What an identical continuation depends on: the images, their order and how they are batched.
# (data.steps_per_execution does not matter: the mini-batches and their order are the same.)
SAME_ON_RESUME = ("data._target_", "data.dataset", "data.batch_size", "data.val_size", "seed")
# What a resumed run may change, said in its log.
CHANGED_ON_RESUME = ("optimizer.lr", "trainer.max_epochs", "trainer.max_steps", "data.steps_per_execution")


def check_resume(resume: str, cfg: DictConfig, net: nn.Module) -> None:
    """Refuse in one line a checkpoint that is none, holds another network, or was trained on
    other data, order or batches; log what the resumed run changes."""
    checkpoint = read(resume)
    check_fits(checkpoint, resume, net, cfg.model.hidden)
    saved = OmegaConf.create(checkpoint["hyper_parameters"])
    differ = [key for key in SAME_ON_RESUME if OmegaConf.select(saved, key) != OmegaConf.select(cfg, key)]
    if differ:
        theirs = " ".join(f"{key}={OmegaConf.select(saved, key)}" for key in differ)
        ours = " ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in differ)
        raise ConfigError(
            f"resume={resume} was trained with {theirs}, this run has {ours}: a resumed run continues the same "
            f"training only with the same data, order and batches. Resume with {theirs}, or start a new run"
        )
    for key in CHANGED_ON_RESUME:
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if before != now:
            log.info("Resuming with %s=%s (it was %s)", key, now, before)


class BestAcrossResume(ModelCheckpoint):
    """Lightning's ModelCheckpoint forgets the best score when a run resumes into another
    directory, so the first epoch after a resume would count as best whatever its score. Keep the
    best across the resume: the old run's best file stays where it is (Lightning removes files only
    inside its own directory)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        self.best_model_score, self.best_model_path = state_dict["best_model_score"], state_dict["best_model_path"]
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)


def for_a_run(directory: Path, monitor: str = "val_accuracy", mode: str = "max") -> tuple[BestAcrossResume, BestAcrossResume]:
    """A run's two checkpoint callbacks, best by `monitor` and last, in <directory>/checkpoints: one
    place that makes them, since a resume finds their state by their settings.

    Saved after History has recorded the epoch (save_on_train_epoch_end), so checkpoints hold it
    too. Two callbacks: with a monitor, Lightning refreshes last.ckpt only when the best improves."""
    best = BestAcrossResume(
        dirpath=directory / "checkpoints",
        filename=f"best-{{epoch}}-{{{monitor}:.4f}}",
        monitor=monitor,
        mode=mode,
        save_on_train_epoch_end=True,
    )
    last = BestAcrossResume(dirpath=directory / "checkpoints", filename="last", save_on_train_epoch_end=True)
    return best, last


def check_fits(checkpoint: dict[str, Any], resume: str, net: nn.Module, hidden: list[int]) -> None:
    """Refuse, naming the differing shapes, a checkpoint that holds another network."""
    saved = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()}
    ours = net.state_dict()
    differences = [
        f"{key} {tuple(saved[key].shape) if key in saved else 'absent'} there, {tuple(ours[key].shape) if key in ours else 'absent'} here"
        for key in sorted(set(saved) | set(ours))
        if key not in saved or key not in ours or saved[key].shape != ours[key].shape
    ]
    if differences:
        saved_hidden = checkpoint.get("hyper_parameters", {}).get("model", {}).get("hidden", "?")
        raise ConfigError(
            f"resume={resume} holds a network with model.hidden={saved_hidden}, this run builds "
            f"model.hidden={list(hidden)}: {'; '.join(differences)}. Resume with model.hidden={saved_hidden}"
        )
