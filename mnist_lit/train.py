"""One run of the tutorial: build everything from the config, fit, test, and leave the results behind."""

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from omegaconf import DictConfig, OmegaConf

from mnist_lit.checkpoint import AtomicCheckpointIO, check_fits, find
from mnist_lit.config import unique_dir, validate
from mnist_lit.history import History
from mnist_lit.module import Classifier
from mnist_lit.summary import count, summary

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, list[float]]:
    """Train as the config says, write the run's files into `output_dir`, return the history.

    `callbacks` are added to the run's own (history, timer, checkpoints).
    """
    validate(cfg)
    checkpoint = find(cfg.resume) if cfg.resume else None
    output_dir = Path(output_dir)
    L.seed_everything(cfg.seed, verbose=False)
    # _convert_="all": plain lists and dicts, so that checkpoints hold no OmegaConf objects.
    net = instantiate(cfg.model, _convert_="all")
    module = Classifier(net, instantiate(cfg.loss), instantiate(cfg.optimizer, _convert_="all"))
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    if checkpoint:
        check_fits(checkpoint, cfg.resume, net, cfg.model.hidden)

    model_summary = summary(net)
    log.info("\n%s", model_summary)
    (output_dir / "summary.txt").write_text(model_summary + "\n")

    history, timer = History(output_dir), Timer()
    # After History has recorded the epoch (save_on_train_epoch_end), so checkpoints hold it too.
    # Two callbacks: with a monitor, Lightning refreshes last.ckpt only when the best improves.
    best = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best-{epoch}-{val_accuracy:.4f}",
        monitor="val_accuracy",
        mode="max",
        save_on_train_epoch_end=True,
    )
    last = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="last", save_on_train_epoch_end=True)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=output_dir,
        logger=False,
        enable_model_summary=False,
        callbacks=[history, timer, best, last, *callbacks],
        plugins=[AtomicCheckpointIO()],
    )
    datamodule = instantiate(cfg.data)
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]

    results = {
        "test_loss": test["test_loss"],
        "test_accuracy": test["test_accuracy"],
        "parameters": count(net),
        "train_seconds": timer.time_elapsed("train"),
        "torch_threads": torch.get_num_threads(),
        "epochs": len(history.history["loss"]),
        "best_checkpoint": best.best_model_path,
    }
    if trainer.is_global_zero:
        (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info(
        "test_loss: %.4f - test_accuracy: %.4f - %.1fs of training",
        results["test_loss"], results["test_accuracy"], results["train_seconds"],
    )
    log.info("Wrote metrics.csv, history.png, summary.txt, results.json and checkpoints/ to %s", output_dir)
    return history.history


def fit(
    *overrides: str, output_dir: str | Path | None = None, callbacks: Sequence[L.Callback] = ()
) -> dict[str, list[float]]:
    """Train from a notebook, e.g. `history = fit("model=mlp", "trainer.max_epochs=3")`.

    Takes the same overrides as the command line and returns `history`: each metric per epoch,
    as Keras's `model.fit(...).history`. The run's files go to `output_dir`, by default a new
    directory under ./outputs.
    """
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    if output_dir is None:
        output_dir = unique_dir(f"outputs/{datetime.now():%Y-%m-%d/%H-%M-%S}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return train(cfg, Path(output_dir), callbacks)
