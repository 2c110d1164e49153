"""Keras's History: the epoch metrics of a run, printed, written to metrics.csv, sent to the run's
loggers and plotted (exercise 4)."""

import logging
import math
import signal
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.common.choices import METRICS
from mnist_lit.lit.loggers import send_metrics, send_picture
from mnist_lit.lit.module import Diverged
from mnist_lit.lit.saving import newest
from mnist_lit.reports.history import plot, write_csv
from mnist_lit.reports.pictures import Picture

# Hydra's own format for a job's log file.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class EpochRecord:
    """`history` maps each metric to its value per epoch, like `model.fit(...).history`: each epoch
    added as a line, to metrics.csv and to the run's log. A plain record, which a run's History
    callback and each network of a stack (lit/stack.py) keep alike. `label` begins each epoch line
    (a stack's job names itself)."""

    def __init__(self, directory: Path, label: str = "") -> None:
        self.directory = Path(directory)
        self.label = label
        self.history: dict[str, list[float]] = {name: [] for name in METRICS}

    def add(self, metrics: dict[str, float], epoch: int, epochs: int | None, seconds: float, write: bool = True) -> str:
        """Epoch `epoch` (from 1) of `epochs`, its line returned; `metrics` lacks those it did not
        compute (an epoch without validation), recorded as NaN. `write`: to metrics.csv and the log."""
        for name in METRICS:
            self.history[name].append(metrics.get(name, math.nan))
        values = " - ".join(f"{name}: {values[-1]:.4f}" for name, values in self.history.items())
        line = f"Epoch {epoch}/{epochs} - {seconds:.1f}s - {values}"
        if write:
            write_csv(self.history, self.directory / "metrics.csv")
            _log_to(self.directory / "mnist_lit.log", line)
        return f"{self.label}{line}"

    def last(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.history.items()}

    def picture(self) -> Picture:
        """history.png, to draw now or (a stack's jobs) with others."""
        return Picture(self.directory / "history.png", plot, (self.history,))

    def state_dict(self) -> dict[str, dict[str, list[float]]]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, dict[str, list[float]]]) -> None:
        self.history = state_dict["history"]


class History(L.Callback):
    """A run's EpochRecord, kept from what the run logs each epoch, and sent to its loggers.

    It is part of the checkpoint, so a resumed run's metrics.csv holds every epoch. A run stopped
    by Ctrl-C or SIGTERM still draws history.png for the epochs done and says how to go on:
    `resume`, the command line that continues from this run's last checkpoint, or `restart`
    while it has none yet. `label`: the record's.
    """

    def __init__(self, directory: Path, resume: str = "", restart: str = "", label: str = "") -> None:
        self.record = EpochRecord(directory, label)
        self.directory = self.record.directory
        self.resume, self.restart = resume, restart
        self.stopped_by: signal.Signals | None = None
        self.trained = False  # the training loop has ended as asked, not stopped

    @property
    def history(self) -> dict[str, list[float]]:
        return self.record.history

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # A resumed run's loggers start empty: they get the epochs before it too.
        for epoch, row in enumerate(zip(*self.history.values(), strict=True), start=1):
            send_metrics(trainer.loggers, dict(zip(self.history, row, strict=True)), epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._started
        # An epoch without validation (limit_val_batches=0, check_val_every_n_epoch) has no val_
        # values, whatever an earlier epoch left in callback_metrics.
        metrics = {
            name: trainer.callback_metrics[name].item()
            for name in METRICS
            if self._validated or not name.startswith("val_")
        }
        epoch = trainer.current_epoch + 1
        if not math.isfinite(metrics["loss"]):
            # Lightning's loop checks no loss (the fast engine checks each mini-batch's): stop before
            # the epoch's checkpoints keep garbage weights.
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            loss = metrics["loss"]
            raise Diverged(
                f"The loss became {loss} during epoch {epoch}: lower optimizer.lr (now {lr:g}) and start again"
            )
        module.print(self.record.add(metrics, epoch, trainer.max_epochs, seconds, write=trainer.is_global_zero))
        send_metrics(trainer.loggers, self.record.last(), len(self.history["loss"]))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.trained = True

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            if self.history["loss"] and not (self.directory / "metrics.csv").exists():
                # A resume whose training had already ended: no epoch came to write it.
                write_csv(self.history, self.directory / "metrics.csv")
            self.picture().write()
            send_picture(trainer.loggers, self.directory / "history.png", len(self.history["loss"]))

    def picture(self) -> Picture:
        return self.record.picture()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        """A stop during the training says how to go on; one after it (the caller says what the
        run's files are then) or any other exception, nothing."""
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        self.stopped_by = signal.SIGINT if isinstance(exception, KeyboardInterrupt) else signal.SIGTERM
        if trainer.is_global_zero and not self.trained:
            self.picture().write()
            saved = newest(self.directory) is not None
            how = f"continue with {self.resume}" if saved else f"no checkpoint yet: start again with {self.restart}"
            print(
                f"Stopped during epoch {trainer.current_epoch + 1} of {trainer.max_epochs}: {how}",
                file=sys.stderr,
                flush=True,
            )

    def state_dict(self) -> dict[str, dict[str, list[float]]]:
        return self.record.state_dict()

    def load_state_dict(self, state_dict: dict[str, dict[str, list[float]]]) -> None:
        self.record.load_state_dict(state_dict)


def _log_to(path: Path, line: str) -> None:
    """`line` as a record of the run's own log (mnist_lit.log, in Hydra's format), not the console,
    which printed it already: each job of a stack has its epoch lines there as a run alone has."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.handle(logging.makeLogRecord({"name": __name__, "levelno": logging.INFO, "levelname": "INFO", "msg": line}))
    handler.close()
