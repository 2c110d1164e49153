"""lit/history.py, Keras's History as a Lightning callback: each epoch's line, its row of
metrics.csv and its line in the run's log; a run stopped by Ctrl-C or SIGTERM draws the epochs it
did and says how to go on. In this process, with Lightning's own handling of the stop
(tests/test_faults.py sends real signals to a child process, which mutation testing cannot see)."""

import csv
import re
import signal

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit import MNISTDataModule
from mnist_lit.lit.history import EpochRecord, History
from tests.conftest import quiet_trainer, seeded

RESUME, RESTART = "python -m mnist_lit resume=run", "python -m mnist_lit model=mlp"


def test_each_epoch_is_a_line_a_row_of_metrics_csv_and_a_line_of_the_log(tmp_path):
    record = EpochRecord(tmp_path, label="[job 3] ")
    lines = [
        record.add({"loss": 0.5, "accuracy": 0.75, "val_loss": 0.25, "val_accuracy": 0.875}, 1, 3, 2.04),
        # An epoch without validation has no val_ values: NaN, not the epoch before's.
        record.add({"loss": 0.375, "accuracy": 0.8125}, 2, 3, 1.96),
        record.add({"loss": 0.25, "accuracy": 0.9, "val_loss": 0.125, "val_accuracy": 0.9375}, 3, 3, 2.0),
    ]
    assert lines[:2] == [
        "[job 3] Epoch 1/3 - 2.0s - loss: 0.5000 - accuracy: 0.7500 - val_loss: 0.2500 - val_accuracy: 0.8750",
        "[job 3] Epoch 2/3 - 2.0s - loss: 0.3750 - accuracy: 0.8125 - val_loss: nan - val_accuracy: nan",
    ]
    assert record.last() == {"loss": 0.25, "accuracy": 0.9, "val_loss": 0.125, "val_accuracy": 0.9375}
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert rows[1:] == [
        ["1", "0.5", "0.75", "0.25", "0.875"],
        ["2", "0.375", "0.8125", "nan", "nan"],
        ["3", "0.25", "0.9", "0.125", "0.9375"],
    ]
    # The log has the lines in Hydra's format, without the label (the log is the job's own).
    logged = (tmp_path / "mnist_lit.log").read_text().splitlines()
    assert [line.split(" - ", 1)[1] for line in logged] == [line.removeprefix("[job 3] ") for line in lines]
    assert all(line.startswith("[") and "][mnist_lit.lit.history][INFO]" in line for line in logged)

    elsewhere = EpochRecord(tmp_path / "unwritten")
    assert elsewhere.add({"loss": 1.0}, 1, None, 0.0, write=False).startswith("Epoch 1/None - 0.0s - loss: 1.0000")
    assert not (tmp_path / "unwritten").exists()


class Stop(L.Callback):
    """Raises `exception` as epoch `epoch` (from 1) begins its first batch, or, with epoch None,
    once the training loop has ended."""

    def __init__(self, exception: BaseException, epoch: int | None) -> None:
        self.exception, self.epoch = exception, epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch + 1 == self.epoch:
            raise self.exception

    def on_train_end(self, trainer, module):
        if self.epoch is None:
            raise self.exception


def fit_until(stop: Stop, directory, data) -> tuple[History, BaseException]:
    """A 2-epoch fit that `stop` ends, as Lightning ends it: the History and what the fit raised."""
    history = History(directory, resume=RESUME, restart=RESTART)
    checkpoints = ModelCheckpoint(directory / "checkpoints", save_last=True)
    trainer = quiet_trainer(max_epochs=2, callbacks=[history, checkpoints, stop], enable_checkpointing=True)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(seeded(hidden=[32]), MNISTDataModule(str(data)))
    except BaseException as raised:  # noqa: BLE001 - what Lightning let out is the result
        return history, raised
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C once it has seen one
    raise AssertionError("the fit was not stopped")


@pytest.mark.parametrize(
    ("exception", "epoch", "raised", "told"),
    [
        (KeyboardInterrupt(), 1, SystemExit, f"no checkpoint yet: start again with {RESTART}"),
        (KeyboardInterrupt(), 2, SystemExit, f"continue with {RESUME}"),
        (SIGTERMException(), 2, SIGTERMException, f"continue with {RESUME}"),
    ],
    ids=["Ctrl-C before a checkpoint", "Ctrl-C after one", "SIGTERM after one"],
)
def test_a_stopped_run_draws_its_epochs_and_says_how_to_go_on(
    exception, epoch, raised, told, tmp_path, tiny_mnist, capsys
):
    history, what = fit_until(Stop(exception, epoch), tmp_path, tiny_mnist)
    assert type(what) is raised
    assert history.stopped_by == (signal.SIGINT if raised is SystemExit else signal.SIGTERM)
    printed = capsys.readouterr()
    assert printed.err.splitlines()[-1] == f"Stopped during epoch {epoch} of 2: {told}"
    # Each epoch done printed its line, with the seconds it took (a fraction of one here).
    seconds = [float(time) for time in re.findall(r"^Epoch \d/2 - (\d+\.\d)s - ", printed.out, re.MULTILINE)]
    assert len(seconds) == epoch - 1 and all(second < 60 for second in seconds)
    assert len(history.history["loss"]) == epoch - 1 and (tmp_path / "history.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("exception", "epoch"), [(ValueError("not a stop"), 2), (KeyboardInterrupt(), None)], ids=["error", "late Ctrl-C"]
)
def test_an_error_or_a_stop_after_the_training_says_nothing_of_going_on(exception, epoch, tmp_path, tiny_mnist, capsys):
    history, what = fit_until(Stop(exception, epoch), tmp_path, tiny_mnist)
    assert "Stopped" not in capsys.readouterr().err
    assert history.stopped_by == (None if epoch else signal.SIGINT)
    assert type(what) is (ValueError if epoch else SystemExit) and history.trained == (epoch is None)
