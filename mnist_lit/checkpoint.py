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


def check_fits(resume: str, net: nn.Module, hidden: list[int]) -> None:
    """Refuse, naming the differing shapes, a checkpoint that is not one or holds another network."""
    checkpoint = read(resume)
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
