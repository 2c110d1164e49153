"""Checkpoints: written whole or not at all, read as data, and compared with the run that resumes one."""

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from mnist_lit.common.errors import ConfigError
from mnist_lit.config.checks import config_of, plain, task

log = logging.getLogger(__name__)


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
    """The checkpoint that `key=path` names, loaded as data; one line naming it if it is none of ours.

    Its "config" is its run's config, read into the typed schema and checked (config.config_of):
    what builds a network from a checkpoint builds it from that, never from what the file names."""
    found = find(path, key)
    try:
        # weights_only: the checkpoint holds tensors and plain containers, and can run no code.
        checkpoint: dict[str, Any] = torch.load(found, map_location=map_location, weights_only=True)
        checkpoint["state_dict"], checkpoint["hyper_parameters"]["model"]
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"{key}={path}: {found} is not a mnist_lit checkpoint ({type(error).__name__}: {detail})"
        ) from None
    checkpoint["config"] = config_of(checkpoint["hyper_parameters"], f"{key}={path}")
    return checkpoint


# What a resumed run may change and still be the same training. Everything else must equal the
# checkpoint's (the network, the loss, Adam's betas and eps, the data, its order and batches, the
# precision, clipping, accumulation, ...).
# Where and how it runs, what it shows, logs and keeps: the numbers do not depend on them (up to
# float rounding), and a mini-batch is the same whatever execution it is run in.
UNSEEN = (
    "resume",
    "data.root",
    "data.steps_per_execution",
    "threads",
    "capture",
    "objective",
    "logger",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.enable_checkpointing",
    "trainer.num_sanity_val_steps",
    "trainer.profiler",
    "trainer.benchmark",
    "trainer.deterministic",
    "trainer.inference_mode",
    "trainer.detect_anomaly",
    "trainer.enable_autolog_hparams",
    "trainer.model_registry",
)
# When it stops: the epochs before the resume are those it would have trained.
UNTIL = (
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.min_steps",
    "trainer.max_time",
    "early_stopping",
)
# What the steps after the resume do, or what is measured: a resumed run applies them from there on.
FROM_HERE_ON = (
    "optimizer.lr",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.limit_predict_batches",
)


def differences(saved: DictConfig, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Each setting whose value differs between two configs: (the saved one's, this one's)."""
    before, now = _flat(saved), _flat(cfg)
    return {
        key: (before.get(key), now.get(key))
        for key in sorted(before.keys() | now.keys())
        if before.get(key) != now.get(key)
    }


def among(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in keys)


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
    kept = {key: values for key, values in differ.items() if not among(key, UNSEEN + UNTIL + FROM_HERE_ON)}
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
