"""How a run saves its checkpoints: each file written whole or not at all, the best epoch's and the
last, the best kept across a resume."""

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lit.common import files
from mnist_lit.common.errors import ConfigError, UserError

# The key under which a checkpoint holds the SHA-256 of its tensors, written with it.
CHECKSUM = "tensors_sha256"


def checksum(checkpoint: dict[str, Any]) -> str:
    """The SHA-256 of every tensor a checkpoint holds: where it lies in the checkpoint, its dtype,
    its shape and its bytes, wherever it is. The plain values around them are not counted."""
    digest = hashlib.sha256()
    for path, tensor in _tensors(checkpoint, ()):
        digest.update(f"{path}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], torch.Tensor]]:
    if isinstance(node, torch.Tensor):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key != CHECKSUM:
                yield from _tensors(value, (*path, key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _tensors(value, (*path, i))


class Damaged(UserError):
    """A checkpoint whose tensors are not those written with it."""


def verified(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`checkpoint`, read from `path`, once its tensors match the checksum written with them; one
    written before checksums has none, and loads as it is."""
    written = checkpoint.get(CHECKSUM)
    if written is not None and written != checksum(checkpoint):
        raise Damaged(
            f"{path} is damaged: its tensors are not those written with it (their SHA-256 differs); resume or "
            "evaluate another checkpoint of the run (its best-*.ckpt), or train again"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning stages a checkpoint in the system's temporary directory and moves it into place,
    a copy when that is another file system: a kill -9 then leaves half a file. Write it beside
    its target, flush it to disk, and rename it over the old one instead, with the checksum of its
    tensors, which every load verifies."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        files.directory(Path(path).parent)
        with files.atomic_write(path, "wb") as f:
            torch.save({**checkpoint, CHECKSUM: checksum(checkpoint)}, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # Lightning's own load (ckpt_path=) reads a user's file as data too, whatever it is asked.
        # Lightning asks with no map_location, and its default puts every tensor on the CPU, from
        # where the strategy moves it: a GPU's checkpoint resumes on a machine without one.
        where = {} if map_location is None else {"map_location": map_location}
        return verified(super().load_checkpoint(path, **where, weights_only=True), path)


def newest(directory: str | Path) -> Path | None:
    """The newest whole checkpoint in a run's directory, or None if it has none yet: last.ckpt,
    or a best epoch's written after it (a stop between the two files of an epoch, or a kill during
    last.ckpt's write). A half-written file never counts: it is a hidden .partial until whole."""
    found = Path(directory, "checkpoints").glob("*.ckpt")
    return max(found, key=lambda path: (path.stat().st_mtime_ns, path.name == "last.ckpt"), default=None)


def find(path: str | Path, key: str = "resume") -> Path:
    """The checkpoint that `key=path` names: a .ckpt file, or a run directory's newest whole one
    (its last.ckpt, or a best epoch's written after it)."""
    given = Path(path)
    found = newest(given) if given.is_dir() else given
    if found is None or not found.is_file():
        raise ConfigError(
            f"{key}={path}: no such checkpoint; give a run directory (with checkpoints/last.ckpt) or a .ckpt file"
        )
    return found


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


class MemberCheckpoints:
    """The checkpoints a network that is not a run of its own (one of a stack's, lit/stack.py) keeps,
    as a run's two RunCheckpoints keep them: the best epoch's by `monitor` (strictly better, one
    file, named as theirs), and last.ckpt every epoch; and their states, in ModelCheckpoint's
    state_dict form under their state keys, so that a run resumed from one of these files goes on
    as from its own (tests/sweeps/test_stacked.py compares them)."""

    def __init__(self, directory: Path, monitor: str = "val_accuracy", mode: str = "max") -> None:
        best, last = run_checkpoints(directory, monitor, mode)
        self.keys = best.state_key, last.state_key
        self.dirpath = str(best.dirpath)
        self.monitor, self.mode = monitor, mode
        self.best_score: torch.Tensor | None = None
        self.best_path = self.last_path = ""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> tuple[list[str], str | None]:
        """For epoch `epoch` (from 0) with these metrics: the files to write now, in order, and the
        earlier best that the new one replaces, if any."""
        value = metrics.get(self.monitor, math.nan)
        # ModelCheckpoint's reading of a NaN: the worst score there is.
        score = torch.tensor(value if not math.isnan(value) else -math.inf if self.mode == "max" else math.inf)
        better = self.best_score is None or (score > self.best_score if self.mode == "max" else score < self.best_score)
        saved, replaced = [], None
        if better:
            path = f"{self.dirpath}/best-epoch={epoch}-{self.monitor}={score.item():.4f}.ckpt"
            replaced = self.best_path if self.best_path and self.best_path != path else None
            self.best_score, self.best_path = score, path
            saved.append(path)
        self.last_path = f"{self.dirpath}/last.ckpt"
        saved.append(self.last_path)
        return saved, replaced

    def states(self) -> dict[str, dict[str, Any]]:
        best, last = self.keys
        common = {"dirpath": self.dirpath, "last_model_path": ""}
        return {
            best: {
                **common,
                "monitor": self.monitor,
                "best_model_score": self.best_score,
                "best_model_path": self.best_path,
                "current_score": self.best_score,
                "best_k_models": {self.best_path: self.best_score} if self.best_path else {},
                "kth_best_model_path": self.best_path,
                "kth_value": self.best_score if self.best_score is not None else _worst(self.mode),
            },
            last: {
                **common,
                "monitor": None,
                "best_model_score": None,
                "best_model_path": self.last_path,
                "current_score": None,
                "best_k_models": {},
                "kth_best_model_path": "",
                "kth_value": _worst("min"),
            },
        }


def _worst(mode: str) -> torch.Tensor:
    return torch.tensor(math.inf if mode == "min" else -math.inf)
