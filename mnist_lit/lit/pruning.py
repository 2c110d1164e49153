"""A run that an Optuna study may prune: it reports its objective to its trial at every epoch's end,
after the epoch's row of metrics.csv and its checkpoints are written, and stops there if the study's
pruner says so. The run then ends as any run that stopped early does: tested, its files written."""

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)


def pruned(trial: Any, value: float, epoch: int) -> bool:
    """Reports the epoch's objective to an optuna.Trial; whether its study prunes it. A pruned trial is
    told so, as Optuna's own optimize() tells a trial that raised TrialPruned."""
    from optuna.trial import TrialState

    trial.report(value, epoch)
    if not trial.should_prune():
        return False
    trial.study.tell(trial, state=TrialState.PRUNED)
    log.info("Optuna pruned trial %d after epoch %d: its run stops here", trial.number, epoch)
    return True


class Pruning(L.Callback):
    """Reports `objective` to an optuna.Trial each epoch; `pruned_at` is the epoch it stopped at.
    `history`: the run's, whose epochs before a resume the trial is told as it starts."""

    def __init__(self, trial: Any, objective: str, history: dict[str, list[float]]) -> None:
        self.trial, self.objective, self.history = trial, objective, history
        self.pruned_at: int | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            for epoch, value in enumerate(self.history.get(self.objective, []), start=1):
                if value == value:  # an epoch without validation recorded NaN: nothing to report
                    self.trial.report(value, epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.objective not in trainer.callback_metrics:
            return  # an epoch without validation
        epoch = trainer.current_epoch + 1
        value = trainer.callback_metrics[self.objective].item()
        if trainer.strategy.broadcast(trainer.is_global_zero and pruned(self.trial, value, epoch)):
            self.pruned_at = epoch
            trainer.should_stop = True


class PruningAfterCheckpoints(Pruning, Checkpoint):
    """Lightning calls every Checkpoint callback after the others, in the order given: as one, after
    the run's own, the trial reports an epoch that is kept."""
