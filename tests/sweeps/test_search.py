"""experiment=search: Hydra's Optuna sweeper searches the learning rate, widths and activation,
maximising the value each run returns, its last val_accuracy."""

import csv

import pytest
from omegaconf import OmegaConf

from tests.conftest import cli

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def search(tmp_path, data, *args):
    """A short experiment=search sweep with Optuna; its summary's rows, its directory and its output."""
    done = cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "experiment=search",
            *args,
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "data.steps_per_execution=2",
        ],
        tmp_path,
        data,
    )
    assert done.returncode == 0, done.stderr
    [sweep] = tmp_path.glob("outputs/multirun/*/*")
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f)), sweep, done.stdout + done.stderr


@pytest.mark.slow
def test_three_trials_search_and_end_with_the_summary_and_optunas_best(tiny_mnist, tmp_path):
    jobs, sweep, _ = search(tmp_path, tiny_mnist, "hydra.sweeper.n_trials=3", "trainer.limit_train_batches=2")
    assert [job["status"] for job in jobs] == ["ok"] * 3
    lrs = [float(job["overrides"].split("optimizer.lr=")[1].split()[0]) for job in jobs]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    # Optuna saw what each run returned: its last val_accuracy, and kept the largest.
    assert best.best_value == pytest.approx(max(float(job["val_accuracy"]) for job in jobs))
    assert set(best.best_params) == {"optimizer.lr", "model.hidden", "model.activation"}
    assert "Best, by optuna: optimizer.lr=" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_trials_asked_for_together_are_stacked_one_network_per_depth(tiny_mnist, tmp_path):
    jobs, _, output = search(
        tmp_path, tiny_mnist, "hydra/launcher=stacked", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4"
    )
    assert [job["status"] for job in jobs] == ["ok"] * 4
    depths = {job["overrides"].split("model.hidden=")[1].split()[0].count(",") + 1 for job in jobs}
    networks = f"{len(depths)} network{'s' if len(depths) > 1 else ''}"
    assert f"Stacked 4 jobs into {networks}" in output
