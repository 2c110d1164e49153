"""logger=tensorboard and logger=mlflow get what metrics.csv gets, read back with each library's own reader."""

import csv
import importlib.util
import os

import pytest

from mnist_lit import fit
from tests.conftest import cli

QUIET = ("model=mlp", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def metrics_csv(run) -> dict[str, list[float]]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {name: [float(row[name]) for row in rows] for name in METRICS}


@pytest.mark.parametrize("started_by", ["fit", pytest.param("the command line", marks=pytest.mark.slow)])
def test_tensorboard_gets_the_epoch_metrics_the_config_and_the_pictures(tiny_env, started_by):
    """From the command line too, whose process ends without Python's teardown."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if started_by == "fit":
        fit(*QUIET, "logger=tensorboard", output_dir="run")
    else:
        done = cli([*QUIET, "logger=tensorboard", "hydra.run.dir=run"], tiny_env, os.environ["MNIST_LIT_DATA"])
        assert done.returncode == 0, done.stderr
    events = EventAccumulator(str(tiny_env / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    expected = metrics_csv(tiny_env / "run")
    for name in METRICS:
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx(expected[name], rel=1e-6)
    assert {"test_loss", "test_accuracy"} <= set(events.Tags()["scalars"])
    assert {"history", "confusion_matrix", "mistakes"} <= set(events.Tags()["images"])
    assert "hidden:\n  - 100" in (tiny_env / "run" / "tensorboard" / "hparams.yaml").read_text()


@pytest.mark.slow  # importing MLflow takes seconds
def test_mlflow_gets_the_epoch_metrics_the_config_and_the_pictures(tiny_env):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    fit(*QUIET, "logger=mlflow", output_dir="run")
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_env / 'run' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("mnist_lit").experiment_id])
    expected = metrics_csv(tiny_env / "run")
    for name in METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(expected[name], rel=1e-6)
    assert {"test_loss", "test_accuracy"} <= set(run.data.metrics)
    assert run.data.params["model/hidden"] == "[100]" and run.data.params["optimizer/lr"] == "0.001"
    assert {"history.png", "confusion_matrix.png", "mistakes.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    assert run.info.run_name == "run"


@pytest.mark.slow  # importing W&B takes seconds
def test_wandb_runs_offline_quietly_with_the_epoch_metrics_the_config_and_the_pictures(tiny_env, monkeypatch, capfd):
    pytest.importorskip("wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    sent = []
    log_metrics = WandbLogger.log_metrics

    def spy(self, metrics, step=None):
        sent.append((dict(metrics), step))
        log_metrics(self, metrics, step)

    params = []
    log_hyperparams = WandbLogger.log_hyperparams

    def spy_params(self, hyper_parameters, *args, **kwargs):
        params.append(hyper_parameters)
        log_hyperparams(self, hyper_parameters, *args, **kwargs)

    monkeypatch.setattr(WandbLogger, "log_metrics", spy)
    monkeypatch.setattr(WandbLogger, "log_hyperparams", spy_params)
    fit(*QUIET, "logger=wandb", "logger.tags=[tiny]", output_dir="run")
    assert params[0]["model"]["hidden"] == [100] and params[0]["logger"]["tags"] == ["tiny"]
    # W&B's own offline files, which `wandb sync` sends.
    [offline] = (tiny_env / "run" / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))
    expected = metrics_csv(tiny_env / "run")
    epochs = [(metrics, step) for metrics, step in sent if "val_accuracy" in metrics]
    assert [step for _, step in epochs] == [1, 2]
    for name in METRICS:
        assert [metrics[name] for metrics, _ in epochs] == pytest.approx(expected[name], rel=1e-6)
    assert any("test_accuracy" in metrics for metrics, _ in sent)
    images = {path.name.rsplit("_", 2)[0] for path in (offline / "files" / "media" / "images").glob("*.png")}
    assert images == {"history", "confusion_matrix", "mistakes"}
    # Finished, so that a sweep's next job is a run of its own; and nothing printed of W&B's.
    assert wandb.run is None
    assert "wandb" not in capfd.readouterr().err


def test_a_resumed_run_sends_its_loggers_every_epoch(tiny_env):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(*QUIET, "trainer.max_epochs=1", output_dir="first")
    fit(*QUIET, "logger=tensorboard", f"resume={tiny_env / 'first'}", output_dir="second")
    events = EventAccumulator(str(tiny_env / "second" / "tensorboard")).Reload()
    assert [s.step for s in events.Scalars("val_accuracy")] == [1, 2]
    assert [s.value for s in events.Scalars("val_accuracy")] == pytest.approx(
        metrics_csv(tiny_env / "second")["val_accuracy"]
    )


def test_a_logger_that_is_not_installed_is_one_line_naming_the_pip_command(tiny_mnist, tmp_path, monkeypatch):
    from mnist_lit.common.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(
        ConfigError, match=r'^logger=mlflow needs mlflow, which is not installed: pip install "mnist_lit\[mlflow\]"$'
    ):
        fit("logger=mlflow", output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_no_logger_is_the_default_and_writes_no_logger_files(tiny_env):
    fit(*QUIET, output_dir="run")
    assert not (tiny_env / "run" / "tensorboard").exists() and not (tiny_env / "run" / "mlflow.db").exists()
    assert cli(["--cfg", "job"], tiny_env, tiny_env).stdout.count("logger:") == 1


def test_a_mistyped_logger_setting_is_one_line_with_the_nearest_name(tmp_path):
    done = cli(["logger=mlflow", "logger.tracking_ur=http://localhost:5000"], tmp_path, tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("logger.tracking_ur is not a setting: did you mean logger.tracking_uri?")
    )
