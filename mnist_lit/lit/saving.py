"""How a run saves its checkpoints: each file written whole or not at all, the best epoch's and the
last, the best kept across a resume."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lit.common import files


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning stages a checkpoint in the system's temporary directory and moves it into place,
    a copy when that is another file system: a kill -9 then leaves half a file. Write it beside
    its target, flush it to disk, and rename it over the old one instead."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        files.directory(Path(path).parent)
        with files.atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # Lightning's own load (ckpt_path=) reads a user's file as data too, whatever it is asked.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class RunCheckpoint(ModelCheckpoint):
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


def run_checkpoints(
    directory: Path, monitor: str = "val_accuracy", mode: str = "max"
) -> tuple[RunCheckpoint, RunCheckpoint]:
    """A run's two checkpoint callbacks, best by `monitor` and last, in <directory>/checkpoints: one
    place that makes them, since a resume finds their state by their settings.

    Saved after History has recorded the epoch (save_on_train_epoch_end), so checkpoints hold it
    too. Two callbacks: with a monitor, Lightning refreshes last.ckpt only when the best improves."""
    best = RunCheckpoint(
        dirpath=directory / "checkpoints",
        filename=f"best-{{epoch}}-{{{monitor}:.4f}}",
        monitor=monitor,
        mode=mode,
        save_on_train_epoch_end=True,
    )
    last = RunCheckpoint(dirpath=directory / "checkpoints", filename="last", save_on_train_epoch_end=True)
    return best, last
