"""A run that an Optuna study may prune: it reports its objective to its trial at every epoch's end,
after the epoch's row of metrics.csv and its checkpoints are written, and stops there if the study's
pruner says so. The run then ends as any run that stopped early does: tested, its files written."""

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)


class Pruning(L.Callback):
    """Reports `objective` to an optuna.Trial each epoch; `pruned_at` is the epoch it stopped at."""

    def __init__(self, trial: Any, objective: str) -> None:
        self.trial, self.objective = trial, objective
        self.pruned_at: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.objective not in trainer.callback_metrics:
            return  # an epoch without validation
        epoch = trainer.current_epoch + 1
        pruned = False
        if trainer.is_global_zero:
            self.trial.report(trainer.callback_metrics[self.objective].item(), epoch)
            pruned = self.trial.should_prune()
        if trainer.strategy.broadcast(pruned):
            self.pruned_at = epoch
            trainer.should_stop = True
            if trainer.is_global_zero:
                from optuna.trial import TrialState

                # As Optuna's own optimize() does with a trial that raised TrialPruned.
                self.trial.study.tell(self.trial, state=TrialState.PRUNED)
                log.info("Optuna pruned trial %d after epoch %d: the run stops here", self.trial.number, epoch)


class PruningAfterCheckpoints(Pruning, Checkpoint):
    """Lightning calls every Checkpoint callback after the others, in the order given: as one, after
    the run's own, the trial reports an epoch that is kept."""
