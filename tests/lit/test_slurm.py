"""Slurm's way of starting DDP, here on one machine: submitit's local executor starting a job's
tasks as Slurm does, docs/train.sbatch's srun tasks, a job stopped midway and requeued; and the
sweeps whose devices could not be a job's tasks, refused in one line."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import cli, last_weights, make_mnist
from tests.lit.test_ddp import DDP, JOB_FILES, RUN_FILES, assert_same_metrics
from tests.sweeps.test_sweep import finish, multirun, read_csv, sweep_dirs

pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def test_a_submitit_job_of_two_tasks_is_one_ddp_run_with_lightnings_own_numbers(tiny_mnist, tmp_path):
    """submitit's local executor starts the tasks as Slurm does (no SLURM_* variables): each task
    one rank, no process started by Lightning, rank 0 alone writing the run's files."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    tasks = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1"]
    runs = {}
    for name, launcher in (("submitit", tasks), ("lightning", ["trainer.strategy=ddp"])):
        (tmp_path / name).mkdir()
        code, _, stderr = finish(multirun([*DDP, "trainer.max_epochs=2", *launcher], tmp_path / name, tiny_mnist))
        assert code == 0, stderr
        (sweep,) = sweep_dirs(tmp_path / name)
        assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok"]
        runs[name] = sweep
    job = runs["submitit"] / "0"
    assert JOB_FILES <= {p.name for p in job.iterdir()}
    assert not list(job.glob("train_ddp_process_*.log"))  # Lightning started no rank
    assert_same_metrics(job, runs["lightning"] / "0", rel=1e-5)
    logs = sorted((runs["submitit"] / ".submitit").rglob("*_log.err"))
    assert len(logs) == 2 and not any("Traceback" in log.read_text() for log in logs)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            ["trainer.devices=2"],
            "trainer.devices=2 inside one submitit task: Lightning cannot start ranks from it; "
            "set hydra.launcher.tasks_per_node=2",
        ),
        (
            ["hydra.launcher.tasks_per_node=2"],
            "trainer.devices=1 with hydra.launcher.tasks_per_node=2: each submitit "
            "task is one device's rank; set trainer.devices=2",
        ),
    ],
)
def test_a_submitit_sweep_whose_devices_are_not_its_tasks_is_refused_in_one_line_before_any_job(
    tiny_mnist, tmp_path, settings, said
):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["model=mlp", "trainer.max_epochs=1", "hydra/launcher=submitit_local", *settings]
    code, _, stderr = finish(multirun(args, tmp_path, tiny_mnist))
    assert code == 1 and stderr.strip().splitlines()[-1].startswith(said), stderr
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_over_devices_has_each_submitit_job_checked_on_its_own(tiny_mnist, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["model=mlp", "trainer.max_epochs=1", "hydra/launcher=submitit_local", "trainer.devices=1,2"]
    code, _, _ = finish(multirun(args, tmp_path, tiny_mnist))
    assert code != 0
    (sweep,) = sweep_dirs(tmp_path)
    ok, refused = read_csv(sweep / "summary.csv")
    assert ok["status"] == "ok"
    assert refused["status"] == "failed" and refused["error"].startswith(
        "ConfigError: trainer.devices=2 inside one submitit task"
    )


def test_several_devices_in_a_parallel_sweep_are_refused_before_any_process_starts(tiny_mnist, tmp_path):
    args = [
        "trainer.devices=2",
        "model.activation=relu,tanh",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.max_epochs=1",
    ]
    code, _, stderr = finish(multirun(args, tmp_path, tiny_mnist))
    assert code == 1
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("trainer.devices=2 inside a sweep run by JoblibLauncher: Lightning's DDP cannot")
    ), stderr
    assert not (tmp_path / "outputs").exists()


def test_the_batch_scripts_srun_tasks_are_one_run_that_writes_its_files_once(tiny_mnist, tmp_path):
    """docs/train.sbatch's command, started as srun starts its tasks (the SLURM_* variables srun
    sets, on one node of this machine, on the CPU): two tasks, one run."""
    script = (Path(__file__).parents[2] / "docs" / "train.sbatch").read_text()
    command = script[script.index("\nsrun ") + len("\nsrun ") :].replace("\\\n", " ").strip()
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "mnist_lit",
        "SLURM_NNODES": "1",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_CPUS_PER_TASK": "1",
    }
    tiny = "trainer.accelerator=cpu trainer.max_epochs=2 data.steps_per_execution=4 trainer.enable_progress_bar=false"
    env = {**os.environ, **slurm, "MNIST_LIT_DATA": str(tiny_mnist)}
    env.pop("HYDRA_FULL_ERROR", None)
    tasks = [
        subprocess.Popen(
            ["bash", "-c", f"{command} {tiny}"],
            cwd=tmp_path,
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    ended = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], ended[0][1][-3000:] + ended[1][1][-3000:]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["slurm-4242"]
    run = tmp_path / "outputs" / "slurm-4242"
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not list(run.glob("train_ddp_process_*.log"))  # Lightning started no rank
    assert len(read_csv(run / "metrics.csv")) == 2
    # Both tasks trained as one run's two processes, each with its own --cpus-per-task.
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["processes"] == 2
    assert "Training on cpu, 1 torch thread (SLURM_CPUS_PER_TASK)" in ended[0][0] + ended[0][1]


def _task_of(folder: Path) -> int:
    """The process id of the submitit task that runs a job of the sweep under `folder`."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in words and any(str(folder).encode() in word for word in words):
            return int(cmdline.parent.name)
    raise AssertionError(f"no submitit task runs under {folder}")


@pytest.mark.parametrize("stop", [signal.SIGUSR2, signal.SIGTERM], ids=["submitit's signal", "SIGTERM"])
def test_a_submitit_job_stopped_midway_is_requeued_and_ends_as_if_never_stopped(tmp_path, stop):
    """Pre-emption or a time limit: submitit's own signal (USR2, which Slurm sends as its
    `--signal`), or a SIGTERM, which the run takes as a clean stop and hands over to submitit. The
    job is requeued, continues from its own last checkpoint in its own directory, and ends with
    the weights and metrics.csv of the same training never stopped."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    data = make_mnist(tmp_path / "data", train=6400)  # 200 steps an epoch: time to stop one midway
    args = ["model=mlp", "trainer.max_epochs=12", "trainer.enable_progress_bar=false", "data.steps_per_execution=4"]
    (tmp_path / "never").mkdir()
    straight = cli([*args, "threads=1", "hydra.run.dir=run"], tmp_path / "never", data)
    assert straight.returncode == 0, straight.stderr
    (tmp_path / "stopped").mkdir()
    sweep = multirun(
        [*args, "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1"], tmp_path / "stopped", data
    )
    deadline = time.monotonic() + 300
    while (
        not (metrics := list((tmp_path / "stopped").glob("outputs/multirun/*/*/0/metrics.csv")))
        or len(metrics[0].read_text().splitlines()) < 3
    ):  # two epochs done, and checkpointed
        assert time.monotonic() < deadline and sweep.poll() is None, finish(sweep)
        time.sleep(0.05)
    os.kill(_task_of(tmp_path / "stopped"), stop)
    code, _, stderr = finish(sweep)
    assert code == 0, stderr
    job = metrics[0].parent
    log = (job / "mnist_lit.log").read_text()
    assert "Requeued by submitit: job" in log and "continues from its own last checkpoint" in log
    # The requeued run went on from the stopped one's last checkpoint: each epoch trained once,
    # but the one whose checkpoint the stop may have cut off (from scratch: 14 or more).
    printed = "".join(out.read_text() for out in job.parent.glob(".submitit/*/*_log.out"))
    epochs = [
        int(line.split("/")[0].removeprefix("Epoch ")) for line in printed.splitlines() if line.startswith("Epoch ")
    ]
    assert sorted(set(epochs)) == list(range(1, 13)) and len(epochs) <= 13, epochs
    assert read_csv(job.parent / "summary.csv")[0]["status"] == "ok"
    assert (job / "metrics.csv").read_text() == (tmp_path / "never" / "run" / "metrics.csv").read_text()
    mine, theirs = last_weights(job), last_weights(tmp_path / "never" / "run")
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
