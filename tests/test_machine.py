"""Each run takes its share of the cores, and parallel jobs spread over the GPUs."""

import os

import lightning as L
import pytest

from mnist_lit import fit
from mnist_lit.runs.machine import devices, threads


@pytest.mark.parametrize(
    ("n_jobs", "cores", "expected"), [(1, 2, 2), (2, 2, 1), (-1, 2, 1), (4, 2, 1), (2, 16, 8), (-2, 16, 1)]
)
def test_joblib_jobs_split_the_cores(n_jobs, cores, expected):
    assert threads("auto", {"n_jobs": n_jobs}, environ={}, available=cores)[0] == expected


def test_a_submitit_budget_is_each_jobs_share():
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": 3}
    assert threads("auto", local, environ={"SUBMITIT_EXECUTOR": "local"}, available=16) == (
        3,
        "hydra.launcher.cpus_per_task",
    )
    assert threads("auto", {}, environ={"SLURM_CPUS_PER_TASK": "4"}, available=64)[0] == 4
    # submitit_local starts all jobs at once: without a budget, one thread each never oversubscribes.
    assert threads("auto", {"cpus_per_task": None}, environ={"SUBMITIT_EXECUTOR": "local"}, available=16)[0] == 1


def test_ddp_processes_on_one_cpu_split_the_share():
    assert threads("auto", {}, processes=2, environ={}, available=2) == (1, "2 cores, 2 processes")
    assert threads("auto", {"cpus_per_task": 8}, processes=2, environ={}, available=64)[0] == 4


def test_a_number_is_taken_as_it_is():
    assert threads(3, {"n_jobs": 2}, processes=2, environ={}, available=2) == (3, "threads=3")


def test_a_single_run_takes_the_cores_it_may_run_on():
    assert threads("auto", {}, environ={}, available=5)[0] == 5


@pytest.mark.parametrize(
    ("launcher", "job", "requested", "gpus", "expected"),
    [
        ({"n_jobs": 4}, 5, 1, 4, [1]),  # parallel jobs take the GPUs in turn
        ({"n_jobs": 4}, 2, 1, 1, 1),  # one GPU: nothing to spread
        ({}, 3, 1, 4, 1),  # one job at a time keeps Lightning's choice
        ({"n_jobs": 2}, 1, 2, 4, 2),  # a job that asks for several devices keeps them
        ({"n_jobs": 2}, 1, [3], 4, [3]),  # and one that names its GPU keeps it
    ],
)
def test_parallel_jobs_spread_over_the_gpus(launcher, job, requested, gpus, expected):
    assert devices(requested, "auto", launcher, job, gpus) == expected


class SeesNvmlCheck(L.Callback):
    def on_train_start(self, trainer, module):
        self.during = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")


def test_a_run_in_one_process_trains_without_the_per_step_nvml_check_and_puts_it_back(tiny_env):
    """`import lightning` sets PYTORCH_NVML_BASED_CUDA_CHECK=1, and torch then loads NVML's library
    at every optimizer step; a run that forks no rank trains without it."""
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
    seen = SeesNvmlCheck()
    fit("model=mlp", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", callbacks=[seen])
    assert seen.during is None
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
