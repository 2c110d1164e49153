import csv
import functools
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep

from mnist_lit.config.checks import validate
from tests.conftest import multirun_in_process

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml"))
TINY = ["trainer.max_epochs=2", "data.steps_per_execution=4", "trainer.enable_progress_bar=false"]


def test_the_tutorials_exercises_have_experiments():
    assert {"activations", "depth", "loss"} <= set(EXPERIMENTS)


def _jobs(params: list[str]) -> list[list[str]]:
    """Every combination of the sweep's values; an interval (Optuna's) by its two ends."""
    overrides = OverridesParser.create().parse_overrides(params)
    if not any(isinstance(o.value(), IntervalSweep) for o in overrides):
        return BasicSweeper.split_arguments(overrides, None)[0]
    values = [
        [o.value().start, o.value().end] if isinstance(o.value(), IntervalSweep) else o.value().list for o in overrides
    ]
    return [
        [f"{o.key_or_group}={v}" for o, v in zip(overrides, job, strict=True)] for job in itertools.product(*values)
    ]


# The search imports Optuna, seconds of it: in the full suite.
@pytest.mark.parametrize(
    "experiment", [pytest.param(name, marks=pytest.mark.slow) if name == "search" else name for name in EXPERIMENTS]
)
def test_every_job_of_every_experiment_composes_and_validates(experiment):
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        sweep = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        jobs = _jobs([f"{key}={value}" for key, value in sweep.hydra.sweeper.params.items()])
        assert len(jobs) >= 2
        for job in jobs:
            validate(compose("config", overrides=[f"experiment={experiment}", *job]))


def multirun(args, cwd, data, **popen):
    env = {**os.environ, "MNIST_LIT_DATA": str(data)}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", "-m", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def sweep_dirs(cwd):
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


@pytest.mark.slow
def test_a_sweep_summarises_its_jobs(tiny_mnist, tmp_path, monkeypatch, capsys):
    line, _ = multirun_in_process(
        ["model=mlp", "model.activation=relu,tanh", *TINY], tmp_path, tiny_mnist, monkeypatch, capsys
    )
    assert line is None
    (sweep,) = sweep_dirs(tmp_path)
    rows = read_csv(sweep / "summary.csv")
    assert [row["overrides"] for row in rows] == ["model.activation=relu", "model.activation=tanh"]
    for row in rows:
        job = read_csv(tmp_path / row["directory"] / "metrics.csv")
        assert row["status"] == "ok" and row["parameters"] == "79510"
        assert float(row["val_accuracy"]) == float(job[-1]["val_accuracy"])
        assert float(row["best_val_accuracy"]) == max(float(r["val_accuracy"]) for r in job)
        assert float(row["val_loss"]) == float(job[-1]["val_loss"])
    assert "model.activation=tanh" in (sweep / "summary.md").read_text()
    assert (sweep / "summary.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_failed_job_is_a_failed_row_and_the_sweep_goes_on(tiny_mnist, tmp_path, monkeypatch, capsys):
    line, _ = multirun_in_process(["model.activation=relux,tanh", *TINY], tmp_path, tiny_mnist, monkeypatch, capsys)
    (sweep,) = sweep_dirs(tmp_path)
    failed, ok = read_csv(sweep / "summary.csv")
    assert failed["status"] == "failed" and "model.activation=relux is unknown" in failed["error"]
    assert ok["status"] == "ok" and ok["val_accuracy"]
    assert f"1 of 2 jobs failed (job 0): see {Path('outputs') / sweep.relative_to(tmp_path / 'outputs')}" in line


@pytest.mark.slow
def test_two_sweeps_started_together_keep_all_their_jobs(tiny_mnist, tmp_path):
    # The same sweep directory name for both, as two sweeps started in the same second get.
    args = ["model.activation=relu,tanh", "hydra.sweep.dir=${unique_dir:outputs/sweep}", *TINY]
    first, second = multirun(args, tmp_path, tiny_mnist), multirun(args, tmp_path, tiny_mnist)
    assert finish(first)[0] == 0 and finish(second)[0] == 0
    for sweep in ("sweep", "sweep-1"):
        rows = read_csv(tmp_path / "outputs" / sweep / "summary.csv")
        assert [row["status"] for row in rows] == ["ok", "ok"]
        assert all((tmp_path / "outputs" / sweep / job / "results.json").exists() for job in ("0", "1"))


@pytest.mark.slow
def test_parallel_jobs_with_joblib_use_their_share_of_threads(tiny_mnist, tmp_path):
    args = ["model.activation=relu,tanh", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY]
    code, _, stderr = finish(multirun(args, tmp_path, tiny_mnist))
    assert code == 0, stderr
    (sweep,) = sweep_dirs(tmp_path)
    cores = len(os.sched_getaffinity(0))
    for job in ("0", "1"):
        results = (sweep / job / "results.json").read_text()
        assert f'"torch_threads": {max(1, cores // 2)}' in results
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok", "ok"]


@pytest.mark.slow
@pytest.mark.parametrize(("budget", "threads"), [([], 1), (["hydra.launcher.cpus_per_task=2"], 2)])
def test_submitit_local_jobs_take_their_budget_of_threads(tiny_mnist, tmp_path, budget, threads):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    code, _, stderr = finish(
        multirun(["seed=0,1", "hydra/launcher=submitit_local", *budget, *TINY], tmp_path, tiny_mnist)
    )
    assert code == 0, stderr
    (sweep,) = sweep_dirs(tmp_path)
    for job in ("0", "1"):
        assert f'"torch_threads": {threads}' in (sweep / job / "results.json").read_text()


@pytest.mark.slow
def test_a_stopped_sweep_says_where_its_jobs_stand_and_resumes(tiny_mnist, tmp_path):
    import signal
    import time

    args = [
        "seed=0,1",
        "model=mlp",
        "trainer.max_epochs=12",
        "data.steps_per_execution=1",
        "trainer.enable_progress_bar=false",
        "hydra.sweep.dir=sweep",
    ]
    process = multirun(args, tmp_path, tiny_mnist)
    last = tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # during job 1, after its first epoch
    code, _, stderr = finish(process)
    assert (
        code == 130
        and stderr.strip().splitlines()[-1] == "Sweep stopped: continue with the same command and resume=sweep"
    )
    assert [row["status"] for row in read_csv(tmp_path / "sweep" / "summary.csv")] == ["ok", "interrupted"]
    kept = (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime

    code, _, stderr = finish(multirun([*args, "resume=sweep"], tmp_path, tiny_mnist))
    assert code == 0, stderr
    assert [row["status"] for row in read_csv(tmp_path / "sweep" / "summary.csv")] == ["ok", "ok"]
    assert (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime == kept
    # Job 1 went on from its own last checkpoint and ended as if never stopped.
    alone = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_lit",
            *[a for a in args if a != "seed=0,1" and not a.startswith("hydra.")],
            "seed=1",
            "hydra.run.dir=alone",
        ],
        cwd=tmp_path,
        env={**os.environ, "MNIST_LIT_DATA": str(tiny_mnist)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode == 0, alone.stderr
    assert (tmp_path / "sweep" / "1" / "metrics.csv").read_text() == (tmp_path / "alone" / "metrics.csv").read_text()


@pytest.mark.slow
def test_a_resumed_sweep_keeps_continues_or_retrains_each_job_by_what_its_directory_was_trained_with(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    args = ["model=mlp", "data.steps_per_execution=4", "trainer.enable_progress_bar=false", "hydra.sweep.dir=sweep"]
    sweep = functools.partial(
        multirun_in_process, cwd=tmp_path, data=tiny_mnist, monkeypatch=monkeypatch, capsys=capsys
    )
    line, _ = sweep([*args, "model.activation=relu,tanh", "trainer.max_epochs=1"])
    assert line is None
    first = {job: (tmp_path / "sweep" / job / "metrics.csv").read_text() for job in ("0", "1")}
    kept = (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime

    # Same first job, another second: job 0 is kept, job 1 trains again from the start, its old files set aside.
    line, printed = sweep([*args, "model.activation=relu,sigmoid", "trainer.max_epochs=1", "resume=sweep"])
    assert line is None
    assert "Job 0 finished in sweep before: kept as it is" in printed.out
    assert (
        "Job 1 was trained with model.activation=tanh, the sweep now asks for model.activation=sigmoid: it trains again"
        in printed.out
    )
    assert (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime == kept
    assert (tmp_path / "sweep" / "1" / "replaced-1" / "metrics.csv").read_text() == first["1"]
    assert (tmp_path / "sweep" / "1" / "metrics.csv").read_text() != first["1"]

    # More epochs of the same training: each job goes on from its own last checkpoint.
    line, printed = sweep([*args, "model.activation=relu,sigmoid", "trainer.max_epochs=2", "resume=sweep"])
    assert line is None
    assert "Resuming with trainer.max_epochs=2 (it was 1)" in printed.out
    for job in ("0", "1"):
        rows = (tmp_path / "sweep" / job / "metrics.csv").read_text().splitlines()
        assert len(rows) == 3 and (job == "1" or rows[:2] == first["0"].splitlines())

    # Fewer epochs than a finished job trained: kept with all its epochs, and the log says so.
    line, printed = sweep([*args, "model.activation=relu,sigmoid", "trainer.max_epochs=1", "resume=sweep"])
    assert line is None
    assert (
        "Job 0 finished 2 epochs in sweep before; the sweep now asks for trainer.max_epochs=1: kept as it"
        in printed.out
    )
    assert len((tmp_path / "sweep" / "0" / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_a_resumed_sweep_runs_its_failed_job_again_once_fixed(tiny_mnist, tmp_path, monkeypatch, capsys):
    """Job 1 reads a damaged copy of MNIST and fails; the file is replaced, the sweep resumed."""
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_mnist, damaged)
    images = damaged / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    args = [f"data.root={tiny_mnist},{damaged}", *TINY, "hydra.sweep.dir=sweep"]
    line, _ = multirun_in_process(args, tmp_path, tiny_mnist, monkeypatch, capsys)
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert (
        line is not None and [row["status"] for row in rows] == ["ok", "failed"] and "is truncated" in rows[1]["error"]
    )
    kept = (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime

    shutil.copy(tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte", images)
    line, printed = multirun_in_process([*args, "resume=sweep"], tmp_path, tiny_mnist, monkeypatch, capsys)
    assert line is None
    assert "Job 0 finished in sweep before: kept as it is" in printed.out
    assert [row["status"] for row in read_csv(tmp_path / "sweep" / "summary.csv")] == ["ok", "ok"]
    assert (tmp_path / "sweep" / "0" / "results.json").stat().st_mtime == kept
    assert not (tmp_path / "sweep" / "1" / "error.txt").exists()
