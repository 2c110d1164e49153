"""lit/pruning.py: a run reports its objective to its Optuna trial at every epoch's end and stops
where the study prunes it, telling the study so; a resumed run first tells the trial the epochs it
trained before the resume."""

import logging
import math
from types import SimpleNamespace

import pytest

from mnist_lit import MNISTDataModule
from mnist_lit.lit.pruning import Pruning
from tests.conftest import quiet_trainer, seeded

optuna = pytest.importorskip("optuna")


def test_a_run_reports_each_epoch_and_stops_where_its_study_prunes_it(tiny_mnist, caplog):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    caplog.set_level(logging.INFO, logger="mnist_lit.lit.pruning")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    stopped = {}
    for lr in (1e-7, 3e-2):
        trial = study.ask()
        pruning = Pruning(trial, "val_accuracy", {})
        trainer = quiet_trainer(max_epochs=3, callbacks=[pruning])
        trainer.fit(seeded(hidden=[32], lr=lr), MNISTDataModule(str(tiny_mnist)))
        stopped[lr] = (pruning.pruned_at, trainer.current_epoch)
        if pruning.pruned_at is None:
            study.tell(trial, trainer.callback_metrics["val_accuracy"].item())
    stuck, learned = study.trials
    assert learned.state == optuna.trial.TrialState.COMPLETE and learned.value > 0.5
    assert list(learned.intermediate_values) == [1, 2, 3] and stopped[3e-2] == (None, 3)
    # Told pruned by the run itself, after the epoch whose val_accuracy fell under the threshold.
    assert stuck.state == optuna.trial.TrialState.PRUNED and stopped[1e-7] == (1, 1)
    assert list(stuck.intermediate_values) == [1] and stuck.intermediate_values[1] < 0.5
    assert "Optuna pruned trial 0 after epoch 1: its run stops here" in caplog.messages


def test_a_resumed_run_first_tells_its_trial_the_epochs_it_had_trained():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    # Epoch 2 ran no validation: metrics.csv recorded NaN, which is not reported.
    pruning = Pruning(trial, "val_accuracy", {"val_accuracy": [0.6, math.nan, 0.7]})
    pruning.on_train_start(SimpleNamespace(is_global_zero=True), None)
    assert study.trials[0].intermediate_values == {1: 0.6, 3: 0.7}
