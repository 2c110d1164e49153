"""The Classifier and the DataModule as a Lightning user takes them: their own Trainer, its
features and its tools, each done by Lightning, on the tiny look-alikes (640 training images, 20
mini-batches of 32 an epoch)."""

import math
import pickle
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.tuner import Tuner

from mnist_lit import Classifier, MNISTDataModule
from mnist_lit.common.choices import METRICS
from tests.conftest import quiet_trainer, seeded


def test_the_lightning_users_script_in_the_docs_runs(tiny_mnist, monkeypatch, tmp_path, capsys):
    docs = (Path(__file__).parents[2] / "docs" / "after-training.md").read_text()
    script = docs.split("<!-- lightning-user -->\n```python\n")[1].split("```")[0]
    assert len(script.splitlines()) <= 11
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    monkeypatch.chdir(tmp_path)
    exec(script, {})
    printed = capsys.readouterr().out
    assert "'val_accuracy'" in printed and "'test_accuracy'" in printed
    assert "val_accuracy" in (tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv").read_text()


def by_hand(model: Classifier, data: MNISTDataModule, accumulate: int = 1, clip=None) -> Classifier:
    """One epoch as a plain torch loop would train it: the same batches, Adam fused as the
    Classifier's, accumulation and clipping as Lightning documents them."""
    data.prepare_data()
    data.setup("fit")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True)
    batches = list(data.train_dataloader())
    for i, (x, y) in enumerate(batches):
        (model.loss(model(x), y) / accumulate).backward()
        if (i + 1) % accumulate == 0 or i + 1 == len(batches):
            if clip == ("norm", 0.05):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            elif clip == ("value", 0.001):
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.001)
            optimizer.step()
            optimizer.zero_grad()
    return model


@pytest.mark.parametrize(
    "settings",
    [
        {"accumulate_grad_batches": 4},
        {"gradient_clip_val": 0.05, "gradient_clip_algorithm": "norm"},
        {"gradient_clip_val": 0.001, "gradient_clip_algorithm": "value"},
    ],
    ids=["accumulate", "clip norm", "clip value"],
)
def test_accumulation_and_clipping_are_lightnings_and_train_as_a_torch_loop(settings, tiny_mnist):
    model = seeded(hidden=[32])
    fitted = quiet_trainer(max_epochs=1, limit_val_batches=0, **settings)
    fitted.fit(model, MNISTDataModule(str(tiny_mnist)))
    clip = (
        (settings["gradient_clip_algorithm"], settings["gradient_clip_val"])
        if "gradient_clip_val" in settings
        else None
    )
    reference = by_hand(
        seeded(hidden=[32]), MNISTDataModule(str(tiny_mnist)), settings.get("accumulate_grad_batches", 1), clip
    )
    assert fitted.global_step == 20 // settings.get("accumulate_grad_batches", 1)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    unclipped = by_hand(seeded(hidden=[32]), MNISTDataModule(str(tiny_mnist)))
    assert not torch.allclose(model.net.output.weight, unclipped.net.output.weight, atol=1e-4)


def test_any_logger_gets_the_epoch_metrics_and_validate_and_test_return_them(tiny_mnist, tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    fitted = quiet_trainer(max_epochs=2, logger=logger, precision="bf16-mixed")
    model, data = Classifier(), MNISTDataModule(str(tiny_mnist))
    fitted.fit(model, data)
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert set(METRICS) <= set(header)
    epochs = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    assert sorted({row["epoch"] for row in epochs if row["val_accuracy"]}) == ["0", "1"]
    assert 0.5 < float(epochs[-1]["val_accuracy"] or epochs[-2]["val_accuracy"]) <= 1
    [validated] = quiet_trainer().validate(model, data)
    [tested] = quiet_trainer().test(model, data)
    assert validated.keys() == {"val_loss", "val_accuracy"} and tested.keys() == {"test_loss", "test_accuracy"}
    # The tiny test split is the validation split: the same numbers, under each stage's names.
    assert validated["val_accuracy"] == pytest.approx(tested["test_accuracy"]) and 0.5 < tested["test_accuracy"]


def test_stochastic_weight_averaging_sets_the_learning_rate(tiny_mnist):
    averaging = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1, annealing_epochs=1)
    fitted = quiet_trainer(max_epochs=2, callbacks=[averaging], limit_val_batches=0)
    fitted.fit(Classifier(), MNISTDataModule(str(tiny_mnist)))
    assert fitted.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)


def test_the_tuner_finds_a_learning_rate_and_a_batch_size(tiny_mnist):
    model, data = Classifier(hidden=[32]), MNISTDataModule(str(tiny_mnist))
    tuner = Tuner(quiet_trainer(max_epochs=1))
    found = tuner.lr_find(model, datamodule=data, num_training=40, update_attr=True)
    assert all(math.isfinite(loss) for loss in found.results["loss"])
    assert math.isfinite(found.suggestion()) and model.lr == found.suggestion()
    size = tuner.scale_batch_size(model, datamodule=data, max_trials=3, steps_per_trial=2)
    assert size == data.batch_size == 8  # from 2, doubled at each of 3 trials that fit


def test_lightning_cli_trains_the_tutorials_network_and_takes_a_scheduler(tiny_mnist, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    arguments = [
        "fit", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--optimizer=Adam", "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.5",
    ]  # fmt: skip
    cli = LightningCLI(Classifier, MNISTDataModule, args=arguments)
    assert sum(p.numel() for p in cli.model.parameters()) == 7850
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    assert cli.trainer.callback_metrics["val_accuracy"] > 0.5
    [saved] = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    loaded = Classifier.load_from_checkpoint(saved)
    assert torch.equal(loaded.net.output.weight, cli.model.net.output.weight)


def test_a_compiled_classifier_trains_without_recompiling_and_still_pickles(tiny_mnist, caplog):
    torch._dynamo.reset()
    model = Classifier(hidden=[32])
    fitted = quiet_trainer(max_epochs=2)
    fitted.fit(
        torch.compile(model, backend="eager"), MNISTDataModule(str(tiny_mnist), batch_size=48)
    )  # a short last batch
    assert torch._dynamo.utils.counters["frames"]["ok"] >= 1  # compiled
    assert "recompile_limit" not in caplog.text
    assert fitted.callback_metrics["val_accuracy"] > 0.5
    assert pickle.loads(pickle.dumps(model)).hparams["hidden"] == [32]


def test_optunas_own_pruning_callback_prunes_the_classifier_in_a_users_study(tiny_mnist):
    optuna = pytest.importorskip("optuna")
    from optuna_integration import PyTorchLightningPruningCallback

    def objective(trial) -> float:
        # Each trial from the same weights, whatever ran before it in this process.
        lr = trial.suggest_categorical("lr", [3e-2, 1e-7])
        model, data = seeded(hidden=[32], lr=lr), MNISTDataModule(str(tiny_mnist))
        fitted = quiet_trainer(max_epochs=3, callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_accuracy")])
        fitted.fit(model, data)
        return fitted.callback_metrics["val_accuracy"].item()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    for lr in (3e-2, 1e-7):
        study.enqueue_trial({"lr": lr})
    study.optimize(objective, n_trials=2)
    complete, pruned = study.trials
    assert complete.state == optuna.trial.TrialState.COMPLETE and complete.value > 0.5
    # Stopped at its first epoch, where Optuna's callback reported what the Classifier logged.
    assert pruned.state == optuna.trial.TrialState.PRUNED and list(pruned.intermediate_values) == [0]
