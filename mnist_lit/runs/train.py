"""One run of the tutorial: the builder makes it from the config, then it fits, tests and leaves its
results behind. `fit` is the same from a notebook."""

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mnist_lit.common import files
from mnist_lit.common.errors import STOPS, ConfigError, Terminated, raised_by, stop_signal, stopped
from mnist_lit.config import directories
from mnist_lit.config.checkpoints import read
from mnist_lit.config.checks import check_machine, validate
from mnist_lit.lit import console, loggers
from mnist_lit.lit.cluster import hand_over_to_submitit
from mnist_lit.lit.history import LOG_FORMAT
from mnist_lit.lit.pruning import Pruning
from mnist_lit.lit.saving import newest, verified
from mnist_lit.reports import mistakes, results
from mnist_lit.runs import build, machine

log = logging.getLogger(__name__)

TEST_METRICS = ("test_loss", "test_accuracy")


def train(cfg: DictConfig, output_dir: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, list[float]]:
    """Train as the config says, write the run's files into `output_dir`, return the history.

    `callbacks` are added to the run's own (history, timer, checkpoints).
    """
    validate(cfg)
    check_machine(cfg, machine.gpus(), machine.cores())
    output_dir = Path(output_dir)
    with _ctrl_c_kept(), _ranks_cleaned_up(), console.quiet(), ExitStack() as alone:
        run = build.run(cfg, output_dir, callbacks)
        if run.ranks == 1:
            alone.enter_context(machine.cuda_check_without_nvml())
        trainer, module, datamodule, history = run.trainer, run.module, run.datamodule, run.history
        _use_threads(run.threads, run.threads_why, trainer)
        if trainer.is_global_zero:
            log.info("\n%s", results.write_summary(output_dir, module.net))
        if run.ranks > 1:
            # Missing data, said once before the ranks start: each rank would say it, then the others
            # that their peer closed the connection.
            datamodule.prepare_data()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=run.ckpt_path)
        except STOPS as stop:
            # One outside Lightning's loops, which History does not see: after them, as fit ends.
            if not history.trained:
                raise
            raise _stopped_after_training(stop_signal(stop), output_dir, trainer.is_global_zero) from None
        except (MisconfigurationException, ValueError) as refusal:
            # What Lightning checks only as it starts the loops (val_check_interval against the epoch's
            # batches): its refusal, raised by its own code, is the settings'.
            if not raised_by(refusal, "lightning", "pytorch"):
                raise
            raise build.refused(cfg, refusal) from None
        except SystemExit:
            if history.stopped_by is None:
                raise
            if history.stopped_by == signal.SIGTERM and run.submitit:
                hand_over_to_submitit()
            if history.trained:  # stopped as it drew history.png
                raise _stopped_after_training(history.stopped_by, output_dir, trainer.is_global_zero) from None
            # History said how to go on.
            raise SystemExit(128 + history.stopped_by) from None
        if run.ckpt_path and cfg.trainer.enable_checkpointing is not False and newest(output_dir) is None:
            # A resume whose training had already ended trained no epoch here: its checkpoint is
            # this run's last, in its own directory too.
            trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")
        try:
            return _test_and_write(cfg, output_dir, run)
        except (MisconfigurationException, ValueError) as refusal:
            # A test limit Lightning checks only as the test starts: after the training, kept whole.
            if not raised_by(refusal, "lightning", "pytorch"):
                raise
            raise ConfigError(
                f"{build.refused(cfg, refusal)}; the training is kept: python -m mnist_lit.evaluate "
                f"checkpoint={output_dir} tests it"
            ) from None
        except (*STOPS, SIGTERMException) as stop:
            raise _stopped_after_training(stop_signal(stop), output_dir, trainer.is_global_zero) from None
        except SystemExit as end:
            # Lightning ends a loop that Ctrl-C stopped with exit status 1, its KeyboardInterrupt as the context.
            if not isinstance(end.__context__, KeyboardInterrupt):
                raise
            raise _stopped_after_training(signal.SIGINT, output_dir, trainer.is_global_zero) from None


def _test_and_write(cfg: DictConfig, output_dir: Path, run: build.Run) -> dict[str, list[float]]:
    """After the training: the test, the run's files, and the history."""
    trainer, module, datamodule, history = run.trainer, run.module, run.datamodule, run.history
    saved = output_dir / "checkpoints" / "last.ckpt"
    if not history.history["loss"] and saved.exists():
        # A spawned strategy (ddp_spawn) trained in other processes: take what rank 0 recorded.
        recorded = verified(torch.load(saved, map_location="cpu", weights_only=True), saved)
        for callback in (history, run.timer):
            callback.load_state_dict(recorded["callbacks"][callback.state_key])
    stopping = cfg.early_stopping
    if stopping.restore_best_weights and run.best.best_model_path:
        module.load_state_dict(read(run.best.best_model_path, "checkpoint")["state_dict"])
        log.info("Restored the best weights (%s %s): %s", run.best.mode, run.best.monitor, run.best.best_model_path)
    _stop_if_lightning_noted_sigterm(trainer)
    trainer.test(module, datamodule=datamodule, verbose=False)
    _stop_if_lightning_noted_sigterm(trainer)
    # trainer.limit_test_batches=0 skips the test: nothing measured, and nothing drawn from it.
    tested = "test_loss" in trainer.callback_metrics
    test = {name: trainer.callback_metrics[name].item() if tested else None for name in TEST_METRICS}
    facts: dict[str, Any] = {
        "train_seconds": run.timer.time_elapsed("train"),
        "torch_threads": run.threads,
        "epochs": len(history.history["loss"]),
        "best_checkpoint": run.best.best_model_path,
    }
    callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # Lightning's CallbackConnector sets it
    pruned = [c.pruned_at for c in callbacks if isinstance(c, Pruning) and c.pruned_at is not None]
    if pruned:
        facts["pruned_at_epoch"] = pruned[0]
    if trainer.is_global_zero:
        if tested:
            if not datamodule.ready:  # a spawned strategy set the data up in its own processes
                datamodule.setup("test")
            # The images the test metrics cover: all, or as many as trainer.limit_test_batches keeps.
            images, labels = datamodule.evaluated("test", run.ranks, trainer.limit_test_batches).tensors
            net = module.net.to(images.device)
            probabilities = mistakes.probabilities(net, images)
            results.write(output_dir, net, test, probabilities, images, labels, datamodule.names, **facts)
            for picture in ("confusion_matrix.png", "mistakes.png"):
                loggers.send_picture(trainer.loggers, output_dir / picture, len(history.history["loss"]))
        else:
            results.write_untested(output_dir, module.net, **facts)
        loggers.close(trainer.loggers)
    if tested:
        log.info(
            "test_loss: %.4f - test_accuracy: %.4f - %.1fs of training",
            test["test_loss"],
            test["test_accuracy"],
            run.timer.time_elapsed("train"),
        )
    else:
        log.info(
            "trainer.limit_test_batches=0: no test was run; results.json holds null for the test, and there is no "
            "confusion matrix or mistakes.png (python -m mnist_lit.evaluate checkpoint=%s tests it)",
            output_dir,
        )
    written = ["metrics.csv", "history.png", "summary.txt", "results.json"]
    written += ["confusion_matrix.csv/.png", "mistakes.png"] if tested else []
    log.info("Wrote %s and checkpoints/ to %s", ", ".join(written), output_dir)
    return history.history


# What a run leaves besides checkpoints/, in the order it writes them.
RUN_FILES = (
    "summary.txt",
    "metrics.csv",
    "history.png",
    "results.json",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "mistakes.png",
)


def _stopped_after_training(by: signal.Signals, output_dir: Path, says: bool) -> SystemExit:
    """A stop once the training has ended: the checkpoints are whole; the line says which of the
    run's files are too, and how to get the test's (`says`: this process speaks for the run)."""
    missing = [name for name in RUN_FILES if not (output_dir / name).exists()]
    if not missing:
        line = f"Stopped after training: the run is complete in {output_dir}"
    elif newest(output_dir) is None:  # trainer.enable_checkpointing=false: nothing to test later
        line = f"Stopped after training, which kept no checkpoint: {', '.join(missing)} not written; run it again"
    else:
        line = (
            f"Stopped after training, its checkpoints whole: {', '.join(missing)} not written; "
            f"python -m mnist_lit.evaluate checkpoint={output_dir} tests the trained network"
        )
    return stopped(by, line) if says else SystemExit(128 + by)


def _stop_if_lightning_noted_sigterm(trainer: L.Trainer) -> None:
    """Lightning's loops take SIGTERM at a step's end: one that came with their last step is only
    noted."""
    if trainer.received_sigterm:
        raise Terminated


@contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """Lightning ignores Ctrl-C once a loop has stopped for one, and leaves it so: a notebook's
    next interrupt, or a sweep's, would be ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _use_threads(threads: int, why: str, trainer: L.Trainer) -> None:
    torch.set_num_threads(threads)
    # Lightning's DDP launchers set their own share unless this is set; its processes inherit it.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    log.info("Training on %s, %d torch thread%s (%s)", trainer.strategy.root_device, threads, "s"[: threads > 1], why)


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
        output_dir = directories.unique_dir(f"outputs/{datetime.now():%Y-%m-%d/%H-%M-%S}")
    output_dir = Path(output_dir)
    directories.claim(output_dir, "output_dir")
    try:
        files.directory(output_dir / ".hydra")
        # What the command line leaves too: the config, the overrides (which sweep summaries and
        # resume read) and the log; Hydra's own hydra.yaml alone has no counterpart here.
        files.text(output_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
        files.text(output_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))
        with _logged_to(output_dir / "mnist_lit.log"):
            return train(cfg, output_dir, callbacks)
    finally:
        directories.release(output_dir)


@contextmanager
def _logged_to(path: Path) -> Iterator[None]:
    """The run's log records into `path`, in Hydra's format, as the command line's job log has them."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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
