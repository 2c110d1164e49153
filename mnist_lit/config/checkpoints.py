"""Checkpoints: written whole or not at all, read as data, and compared with the run that resumes one."""

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from mnist_lit.common.errors import ConfigError
from mnist_lit.config.checks import plain, task
from mnist_lit.config.saved import config_of
from mnist_lit.config.schema import Resume, policy
from mnist_lit.lit.saving import Damaged, find, verified

log = logging.getLogger(__name__)


def read(path: str | Path, key: str = "resume", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint that `key=path` names, loaded as data; one line naming it if it is none of ours.

    Its "config" is its run's config, read into the typed schema and checked (config/saved.py):
    what builds a network from a checkpoint builds it from that, never from what the file names."""
    found = find(path, key)
    try:
        # weights_only: the checkpoint holds tensors and plain containers, and can run no code.
        checkpoint: dict[str, Any] = torch.load(found, map_location=map_location, weights_only=True)
        checkpoint["state_dict"], checkpoint["hyper_parameters"]["model"]
        verified(checkpoint, found)
    except Damaged as damaged:
        raise ConfigError(f"{key}={path}: {damaged}") from None
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"{key}={path}: {found} is not a mnist_lit checkpoint ({type(error).__name__}: {detail})"
        ) from None
    checkpoint["config"] = config_of(checkpoint["hyper_parameters"], f"{key}={path}")
    return checkpoint


def differences(saved: DictConfig, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Each setting whose value differs between two configs: (the saved one's, this one's)."""
    before, now = _flat(saved), _flat(cfg)
    return {
        key: (before.get(key), now.get(key))
        for key in sorted(before.keys() | now.keys())
        if before.get(key) != now.get(key)
    }


def resumed_as(key: str) -> Resume:
    """What a resume may do with the setting `key` (config/schema.py declares it)."""
    found: Resume = policy("resume", key, Resume.SAME)
    return found


def _flat(cfg: DictConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        else:
            flat[path] = node

    walk(plain(task(cfg)), "")
    return flat


def check_resume(resume: str, cfg: DictConfig, net: nn.Module) -> dict[str, Any]:
    """The checkpoint to resume, refused in one line if it is none, holds another network, or was
    trained otherwise than this run asks in any setting a resume must keep; what the resumed run
    changes is said in its log."""
    checkpoint = read(resume)
    check_fits(checkpoint, resume, net, cfg.model.hidden)
    differ = differences(checkpoint["config"], cfg)
    kept = {key: values for key, values in differ.items() if resumed_as(key) == Resume.SAME}
    if "seed" in kept and kept.get("data.seed") == kept["seed"]:
        del kept["data.seed"]  # it follows seed unless set: naming seed says it all
    if kept:
        theirs = " ".join(f"{key}={before}" for key, (before, _) in kept.items())
        ours = " ".join(f"{key}={now}" for key, (_, now) in kept.items())
        raise ConfigError(
            f"resume={resume} was trained with {theirs}, this run has {ours}: a resumed run continues the same "
            f"training, changing only when it stops, the learning rate, the devices and what it shows. Resume with "
            f"{theirs}, or start a new run"
        )
    for key, (before, now) in differ.items():
        if key not in ("resume", "data.root"):
            log.info("Resuming with %s=%s (it was %s)", key, now, before)
    return checkpoint


def tell_processes(checkpoint: dict[str, Any], processes: int, batch_size: int) -> None:
    """Say so when a resumed run trains on another number of processes: each mini-batch of DDP is
    one `batch_size` per process, so the real batch changes with them."""
    before = checkpoint.get("processes")
    if before is not None and before != processes:
        log.info(
            "Resuming on %d process%s (it was %d): the real batch goes from %d to %d",
            processes,
            "es"[: 2 * (processes > 1)],
            before,
            before * batch_size,
            processes * batch_size,
        )


def check_fits(checkpoint: dict[str, Any], resume: str, net: nn.Module, hidden: list[int]) -> None:
    """Refuse, naming the differing shapes, a checkpoint that holds another network."""
    saved = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()}
    ours = net.state_dict()
    differences = [
        f"{key} {tuple(saved[key].shape) if key in saved else 'absent'} there, "
        f"{tuple(ours[key].shape) if key in ours else 'absent'} here"
        for key in sorted(set(saved) | set(ours))
        if key not in saved or key not in ours or saved[key].shape != ours[key].shape
    ]
    if differences:
        saved_hidden = checkpoint.get("hyper_parameters", {}).get("model", {}).get("hidden", "?")
        raise ConfigError(
            f"resume={resume} holds a network with model.hidden={saved_hidden}, this run builds "
            f"model.hidden={list(hidden)}: {'; '.join(differences)}. Resume with model.hidden={saved_hidden}"
        )
