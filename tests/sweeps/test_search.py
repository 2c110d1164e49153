"""experiment=search: hydra/sweeper=optuna searches the learning rate, widths and activation,
maximising the value each run returns, its last val_accuracy; its pruners stop trials early, in
the jobs of any launcher, a stack's among them; a stopped search resumes."""

import csv
import json
import os

import pytest
from omegaconf import OmegaConf

from mnist_lit import fit
from mnist_lit.sweeps.summary import read_metrics
from tests.conftest import cli, in_process

pytest.importorskip("optuna")


BASE = ("model=mlp", "trainer.enable_progress_bar=false", "data.steps_per_execution=2", "data.val_size=100")


def search(tmp_path, data, *args):
    """A short experiment=search sweep with Optuna; its summary's rows, its directory and its output."""
    done = cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "experiment=search",
            "trainer.max_epochs=1",
            *BASE[1:],
            *args,
        ],
        tmp_path,
        data,
    )
    assert done.returncode == 0, done.stderr
    [sweep] = tmp_path.glob("outputs/multirun/*/*")
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f)), sweep, done.stdout + done.stderr


@pytest.mark.slow
def test_pruned_trials_leave_a_stack_whose_others_train_on_as_alone(tiny_mnist, tmp_path, monkeypatch):
    """Four trials asked together train as one network; successive halving prunes some after an
    epoch, in the order the trials report, and they leave it; every trial's epochs are its run's."""
    searched = "{optimizer.lr:'choice(3e-2,1e-7)',model.hidden:'choice([16],[64])',model.activation:relu}"
    jobs, sweep, output = search(
        tmp_path,
        tiny_mnist,
        "hydra/launcher=stacked",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=successive_halving",
        "hydra.sweeper.pruner.min_resource=1",
        "hydra.sweeper.pruner.reduction_factor=2",
        f"hydra.sweeper.params={searched}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "trainer.max_epochs=3",
    )
    assert "Stacked 4 jobs into 1 network" in output
    pruned = [job for job in jobs if job["status"].startswith("pruned")]
    assert pruned and len(pruned) < 4 and all(job["status"] != "failed" for job in jobs)
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    monkeypatch.chdir(tmp_path)
    for job in jobs:
        trained = [o for o in job["overrides"].split() if o.startswith(("optimizer.lr=", "model.hidden="))]
        alone = fit(*BASE, *trained, "model.activation=relu", "trainer.max_epochs=3", output_dir=f"alone-{job['job']}")
        ours = read_metrics(sweep / job["job"] / "metrics.csv", ("loss", "val_loss"))
        epochs = len(ours["loss"])
        assert epochs == (int(job["status"].rsplit(" ", 1)[1]) if job in pruned else 3)
        # Batched and single matmuls round differently: equal to float rounding.
        assert ours["loss"] == pytest.approx(alone["loss"][:epochs], rel=1e-4)
        assert ours["val_loss"] == pytest.approx(alone["val_loss"][:epochs], rel=1e-4)


@pytest.mark.slow
def test_a_pruned_trial_stops_keeps_what_it_trained_and_is_no_failure(tiny_mnist, tmp_path):
    # A learning rate that learns nothing beside one that learns: Optuna's median pruner, which
    # compares each epoch with the finished trials' from the first on, prunes the first at epoch 1.
    jobs, sweep, output = search(
        tmp_path,
        tiny_mnist,
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.params={optimizer.lr:'choice(3e-2,1e-7)',model.hidden:'[100]',model.activation:relu}",
        "trainer.max_epochs=3",
    )
    lrs = [float(job["overrides"].split("optimizer.lr=")[1].split()[0]) for job in jobs]
    first_good = lrs.index(3e-2)
    pruned = [i for i, lr in enumerate(lrs) if lr == 1e-7 and i > first_good]
    assert pruned, lrs  # the random sampler's seed (0) asks for 1e-7, 3e-2, 1e-7, 1e-7
    for i, job in enumerate(jobs):
        directory = sweep / job["job"]
        rows = len(read_metrics(directory / "metrics.csv")["val_accuracy"])
        results = json.loads((directory / "results.json").read_text())
        if i in pruned:
            assert job["status"] == "pruned at epoch 1" and rows == 1 and results["pruned_at_epoch"] == 1
            # What it trained is kept: its epoch's checkpoint, and the test of its weights.
            assert (directory / "checkpoints" / "last.ckpt").exists() and results["test_accuracy"] < 0.5
        else:
            assert job["status"] == "ok" and rows == 3 and "pruned_at_epoch" not in results
    found = OmegaConf.load(sweep / "optimization_results.yaml")
    assert found.trials == {"complete": 4 - len(pruned), "pruned": len(pruned)}
    assert found.best_params == {"optimizer.lr": 3e-2}
    table = (sweep / "summary.md").read_text()
    assert f"Trials: {4 - len(pruned)} complete, {len(pruned)} pruned;" in table
    assert f"{12 - 2 * len(pruned)} epochs trained, of the 12 a search without pruning trains" in table
    assert "Optuna pruned trial" in output and (sweep / "search.png").exists()


@pytest.mark.slow
def test_a_stopped_search_resumes_its_study_and_the_trial_it_left_running(tiny_mnist, tmp_path):
    """Three trials of experiment=search, stopped during the second, then resumed."""
    import signal
    import subprocess
    import sys
    import time

    args = [
        "-m",
        "experiment=search",
        *BASE,
        "data.steps_per_execution=1",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=8",
        "hydra.sweep.dir=sweep",
    ]
    env = {**os.environ, "MNIST_LIT_DATA": str(tiny_mnist)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *args], cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE
    )
    last = tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=300)
    assert process.returncode == 130
    stopped = read_metrics(tmp_path / "sweep" / "1" / "metrics.csv")["val_accuracy"]
    assert 1 <= len(stopped) < 8
    done = cli([*args, "resume=sweep"], tmp_path, tiny_mnist)
    assert done.returncode == 0, done.stderr
    assert "Resuming the study: the trials left running (1) go on in their job directories" in done.stdout
    sweep = tmp_path / "sweep"
    with open(sweep / "summary.csv") as f:
        jobs = list(csv.DictReader(f))
    # Job 1 went on from its checkpoint, as trial 2; trial 3 is the last one asked for.
    assert [(job["job"], job["status"]) for job in jobs] == [("0", "ok"), ("1", "ok"), ("2", "ok")]
    assert [job["overrides"].split("trial=")[1].split()[0] for job in jobs] == ["0", "2", "3"]
    resumed = read_metrics(sweep / "1" / "metrics.csv")["val_accuracy"]
    assert len(resumed) == 8 and resumed[: len(stopped)] == stopped
    found = OmegaConf.load(sweep / "optimization_results.yaml")
    assert found.trials == {"complete": 3, "interrupted": 1}
    # experiment=search's own space, and Optuna's best: the largest last val_accuracy of the three.
    lrs = [float(job["overrides"].split("optimizer.lr=")[1].split()[0]) for job in jobs]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert found.best_value == pytest.approx(max(float(job["val_accuracy"]) for job in jobs))
    assert set(found.best_params) == {"optimizer.lr", "model.hidden", "model.activation"}
    assert f"Best, by optuna: optimizer.lr={found.best_params['optimizer.lr']}" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_trials_in_processes_of_their_own_are_pruned_through_the_sweeps_study(tiny_mnist, tmp_path):
    # joblib's processes share only the study's journal file; the threshold pruner decides alike
    # whichever trial reports first.
    searched = "{optimizer.lr:'choice(3e-2,1e-7)',model.hidden:'[16]',model.activation:relu}"
    jobs, sweep, _ = search(
        tmp_path,
        tiny_mnist,
        "hydra/launcher=joblib",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=0.5",
        f"hydra.sweeper.params={searched}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_epochs=2",
    )
    statuses = {job["overrides"].split("optimizer.lr=")[1].split()[0]: job["status"] for job in jobs}
    assert statuses == {"0.03": "ok", "1e-07": "pruned at epoch 1"}
    assert OmegaConf.load(sweep / "optimization_results.yaml").trials == {"complete": 1, "pruned": 1}


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["trial=3"], "trial=3 is set by hydra/sweeper=optuna for each of its jobs: leave it unset"),
        (
            ["-m", "experiment=search", "hydra/sweeper/pruner=median", "hydra.sweeper.direction=[maximize,minimize]"],
            "hydra.sweeper.pruner prunes a search of one objective; Optuna does not prune several (direction has 2): "
            "hydra/sweeper/pruner=none",
        ),
        (
            ["-m", "experiment=search", "hydra/sweeper/sampler=motpe"],
            "hydra/sweeper/sampler=motpe: the 'motpe' sampler was removed in Optuna 4.0; its TPE searches several "
            "objectives itself: hydra/sweeper/sampler=tpe",
        ),
    ],
)
def test_what_the_search_does_not_do_is_refused_in_one_line(args, line, tiny_env, monkeypatch):
    assert in_process("__main__", [*args, *BASE, "trainer.max_epochs=1"], monkeypatch) == line
