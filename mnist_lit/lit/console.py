"""What a run prints: the model summary, one Keras line per epoch and the results; each of
Lightning's messages once, where the run's log goes; and none of the notices a user cannot act on.
A progress bar only where it can redraw itself, a terminal: in a log file, CI or a notebook the
epoch lines say it all."""

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from mnist_lit.lit.internals import NOTICES, WARNINGS

# Lightning's loggers that print with handlers of their own when imported before logging was set up.
LIGHTNING = ("lightning", "lightning.pytorch", "lightning.fabric")


def _not_a_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(NOTICES.get(record.name, ()))


@contextmanager
def quiet() -> Iterator[None]:
    """For the length of a run. Where the root logger has handlers (Hydra's console and log file, or
    fit()'s log file), Lightning's messages go through them alone, instead of through its own
    handlers too, which printed each message twice on the command line."""
    routed = logging.getLogger().handlers
    saved = [(logger, logger.handlers[:], logger.propagate) for logger in map(logging.getLogger, LIGHTNING)]
    noticing = [logging.getLogger(name) for name in NOTICES]
    with warnings.catch_warnings():
        for message, module in WARNINGS:
            warnings.filterwarnings("ignore", message=message, module=module)
        for logger in noticing:
            logger.addFilter(_not_a_notice)
        if routed:
            for logger, _, _ in saved:
                logger.handlers.clear()
                logger.propagate = True
        try:
            yield
        finally:
            for logger in noticing:
                logger.removeFilter(_not_a_notice)
            for logger, handlers, propagate in saved:
                logger.handlers[:] = handlers
                logger.propagate = propagate


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, its epochs counted from 1 of max_epochs as the Keras lines count them."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


def progress_bar(setting: bool | None) -> list[L.Callback]:
    """The bar as `trainer.enable_progress_bar` says; unset: where stdout, which it draws on, is a terminal."""
    wanted = sys.stdout.isatty() if setting is None else setting
    return [ProgressBar()] if wanted else []
