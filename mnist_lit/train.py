"""One run of the tutorial: build everything from the config, fit, test, and leave the results behind."""

import json
import logging
import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import EarlyStopping, Timer
from omegaconf import DictConfig, OmegaConf

from mnist_lit import build, share
from mnist_lit.checkpoint import check_resume, find, read, tell_processes
from mnist_lit.common import files
from mnist_lit.config.checks import check_machine, validate
from mnist_lit.config.directories import unique_dir
from mnist_lit.lit import console, loggers
from mnist_lit.lit.history import History
from mnist_lit.lit.saving import AtomicCheckpointIO, run_checkpoints
from mnist_lit.nn.summary import count, summary
from mnist_lit.reports import mistakes

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, list[float]]:
    """Train as the config says, write the run's files into `output_dir`, return the history.

    `callbacks` are added to the run's own (history, timer, checkpoints).
    """
    validate(cfg)
    check_machine(cfg, share.gpus(), share.cores())
    checkpoint = find(cfg.resume) if cfg.resume else None
    output_dir = Path(output_dir)
    L.seed_everything(cfg.seed, verbose=False)
    module = build.classifier(cfg)
    net = module.net
    resumed = check_resume(cfg.resume, cfg, net) if checkpoint else None

    history, timer = History(output_dir, *_commands(cfg, output_dir)), Timer(duration=cfg.trainer.max_time)
    stopping = cfg.early_stopping
    # The best epoch is the one early stopping watches for, if it is on.
    monitor, mode = (stopping.monitor, stopping.mode) if stopping.patience is not None else ("val_accuracy", "max")
    best, last = run_checkpoints(output_dir, monitor, mode)
    checkpoints = [best, last] if cfg.trainer.enable_checkpointing is not False else []
    if stopping.patience is not None:
        callbacks = [
            EarlyStopping(monitor, min_delta=stopping.min_delta, patience=stopping.patience, mode=mode, verbose=True),
            *callbacks,
        ]
    launcher, job = _sweep_job()
    bar = console.progress_bar(cfg.trainer.enable_progress_bar)
    with _ranks_cleaned_up(), console.quiet():
        trainer = build.trainer(
            cfg,
            devices=share.devices(cfg.trainer.devices, cfg.trainer.accelerator, launcher, job, share.gpus()),
            default_root_dir=output_dir,
            logger=build.loggers(cfg, output_dir) or False,
            callbacks=[history, timer, *checkpoints, *bar, *callbacks],
            enable_progress_bar=bool(bar),
            plugins=[AtomicCheckpointIO()],
        )
        threads = _take_threads(cfg.threads, launcher, trainer)
        # From the devices: world_size is known only once the ranks start, and after ddp_spawn
        # this process knows none.
        ranks = trainer.num_nodes * trainer.num_devices
        if resumed and trainer.is_global_zero:
            tell_processes(resumed, ranks, cfg.data.batch_size)
        if trainer.is_global_zero:
            model_summary = summary(net)
            log.info("\n%s", model_summary)
            files.text(output_dir / "summary.txt", model_summary + "\n")

        datamodule = build.datamodule(cfg)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
        except SystemExit:
            if history.stopped_by is None:
                raise
            # The shell's convention, 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM.
            raise SystemExit(128 + history.stopped_by) from None
        saved = output_dir / "checkpoints" / "last.ckpt"
        if not history.history["loss"] and saved.exists():
            # A spawned strategy (ddp_spawn) trained in other processes: take what rank 0 recorded.
            recorded = torch.load(saved, map_location="cpu", weights_only=True)
            for callback in (history, timer):
                callback.load_state_dict(recorded["callbacks"][callback.state_key])
        if stopping.restore_best_weights and best.best_model_path:
            module.load_state_dict(read(best.best_model_path, "checkpoint")["state_dict"])
            log.info("Restored the best weights (%s %s): %s", mode, monitor, best.best_model_path)
        trainer.test(module, datamodule=datamodule, verbose=False)
        test = {name: trainer.callback_metrics[name].item() for name in ("test_loss", "test_accuracy")}
        per_class = None
        if trainer.is_global_zero:
            per_class = _report_mistakes(module, datamodule, output_dir, ranks)
            for picture in ("confusion_matrix.png", "mistakes.png"):
                loggers.send_picture(trainer.loggers, output_dir / picture, len(history.history["loss"]))
            loggers.close(trainer.loggers)

    results = {
        "test_loss": test["test_loss"],
        "test_accuracy": test["test_accuracy"],
        "parameters": count(net),
        "train_seconds": timer.time_elapsed("train"),
        "torch_threads": threads,
        "epochs": len(history.history["loss"]),
        "per_class_accuracy": per_class,
        "best_checkpoint": best.best_model_path,
    }
    if trainer.is_global_zero:
        files.text(output_dir / "results.json", json.dumps(results, indent=2) + "\n")
    log.info(
        "test_loss: %.4f - test_accuracy: %.4f - %.1fs of training",
        results["test_loss"], results["test_accuracy"], results["train_seconds"],
    )
    log.info(
        "Wrote metrics.csv, history.png, summary.txt, results.json, confusion_matrix.csv/.png, mistakes.png "
        "and checkpoints/ to %s", output_dir,
    )
    return history.history


def _commands(cfg: DictConfig, output_dir: Path) -> tuple[str, str]:
    """The command lines that continue this run from its own last checkpoint, and that start it
    again (from the checkpoint it resumed, if any) while it has none."""
    if not HydraConfig.initialized():
        return f'fit(..., "resume={output_dir}")', "fit(...)" if not cfg.resume else f'fit(..., "resume={cfg.resume}")'
    # Quoted as a shell reads them back: an override may hold spaces, brackets or quotes.
    again = ["python", "-m", "mnist_lit", *(o for o in HydraConfig.get().overrides.task if not o.startswith("resume="))]
    return shlex.join([*again, f"resume={output_dir}"]), shlex.join([*again, f"resume={cfg.resume}"] if cfg.resume else again)


def _report_mistakes(module: L.LightningModule, datamodule: L.LightningDataModule, output_dir: Path, ranks: int) -> dict[str, float]:
    """The final weights on the test images: confusion matrix, mistakes, per-class accuracy."""
    if datamodule.train is None:  # a spawned strategy set the data up in its own processes
        datamodule.setup("test")
    # The images the test metrics cover: all, or as many as trainer.limit_test_batches keeps.
    images, labels = datamodule.evaluated("test", ranks).tensors
    probabilities = mistakes.probabilities(module.net.to(images.device), images)
    return mistakes.write(output_dir, images, labels, probabilities, datamodule.names)


def _take_threads(setting: int | str, launcher: dict, trainer: L.Trainer) -> int:
    cpu_processes = trainer.num_devices if trainer.strategy.root_device.type == "cpu" else 1
    threads, why = share.threads(setting, launcher, cpu_processes)
    torch.set_num_threads(threads)
    # Lightning's DDP launchers set their own share unless this is set; its processes inherit it.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    log.info("Training on %s, %d torch thread%s (%s)", trainer.strategy.root_device, threads, "s"[: threads > 1], why)
    return threads


@contextmanager
def _ranks_cleaned_up() -> Iterator[None]:
    """Lightning's DDP launchers leave their process group and environment (LOCAL_RANK,
    MASTER_PORT, ...) behind: the next run in this process, a sweep's next job or a notebook's
    next fit, would take itself for a rank that someone else started."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def _sweep_job() -> tuple[dict, int]:
    """The launcher config and job number of this Hydra sweep job; empty outside a sweep."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}, 0
    hydra_cfg = HydraConfig.get()
    return OmegaConf.to_container(hydra_cfg.launcher, resolve=True), hydra_cfg.job.num


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
    output_dir = files.directory(output_dir)
    files.directory(output_dir / ".hydra")
    # What the command line leaves too: the config, the overrides (which sweep summaries and resume
    # read) and the log; Hydra's own hydra.yaml alone has no counterpart here.
    files.text(output_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    files.text(output_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))
    with _logged_to(output_dir / "mnist_lit.log"):
        return train(cfg, output_dir, callbacks)


@contextmanager
def _logged_to(path: Path) -> Iterator[None]:
    """The run's log records into `path`, in Hydra's format, as the command line's job log has them."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
