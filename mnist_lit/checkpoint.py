"""Checkpoints: written whole or not at all, and checked before a run resumes from one."""

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from mnist_lit.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning stages a checkpoint in the system's temporary directory and moves it into place,
    a copy when that is another file system: a kill -9 then leaves half a file. Write it beside
    its target, flush it to disk, and rename it over the old one instead."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)


def find(resume: str) -> Path:
    """The checkpoint that `resume=` names: a .ckpt file, or a run directory's last.ckpt."""
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            f"resume={resume}: no such checkpoint; give a run directory (with checkpoints/last.ckpt) or a .ckpt file"
        )
    return path


def check_fits(path: Path, resume: str, net: nn.Module, hidden: list[int]) -> None:
    """Refuse, naming the differing shapes, a checkpoint that is not one or holds another network."""
    try:
        # weights_only: the checkpoint holds tensors and plain containers, and can run no code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()}
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"resume={resume}: {path} is not a mnist_lit checkpoint ({reason})") from None
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
