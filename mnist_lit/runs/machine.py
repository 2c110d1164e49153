"""Each run takes its share of the machine and no more: torch threads for the cores it may use, and
a GPU of its own when parallel jobs share a workstation with several.

Threads that wait on each other collapse when runs ask for more than there are cores (two 2-thread
runs on 2 cores each take several times as long as with one thread each; benchmarks/RESULTS.md), so
the share is worked out from what confines this process, most specific first."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroups, Slurm)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpus() -> int:
    """The CUDA GPUs this process sees (none without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def threads(
    setting: int | str,
    launcher: Mapping[str, Any] | None = None,
    processes: int = 1,
    environ: Mapping[str, str] = os.environ,
    available: int | None = None,
) -> tuple[int, str]:
    """Torch threads for one of `processes` training processes of this run (DDP on a CPU), and why.

    `setting` is the `threads` key: a number, or "auto". `launcher` is the job's Hydra launcher
    config, if any: joblib's `n_jobs` parallel jobs split the cores; submitit's `cpus_per_task`
    (and Slurm's SLURM_CPUS_PER_TASK) is each job's budget."""
    if setting != "auto":
        return int(setting), f"threads={setting}"
    available = available or cores()
    launcher = launcher or {}
    if environ.get("SLURM_CPUS_PER_TASK"):
        budget, why = int(environ["SLURM_CPUS_PER_TASK"]), "SLURM_CPUS_PER_TASK"
    elif launcher.get("cpus_per_task"):
        budget, why = int(launcher["cpus_per_task"]), "hydra.launcher.cpus_per_task"
    elif launcher.get("n_jobs"):
        n_jobs = launcher["n_jobs"] if launcher["n_jobs"] > 0 else max(1, available + 1 + launcher["n_jobs"])
        budget, why = max(1, available // n_jobs), f"{n_jobs} parallel jobs on {available} cores"
    elif environ.get("SUBMITIT_EXECUTOR") == "local":
        # submitit_local starts every job at once and tells none of them how many there are.
        budget, why = 1, "submitit_local without hydra.launcher.cpus_per_task"
    else:
        budget, why = available, f"{available} cores"
    if processes > 1:
        why += f", {processes} processes"
    return max(1, budget // processes), why


def devices(devices: Any, accelerator: str, launcher: Mapping[str, Any], job: int, gpus: int) -> Any:
    """`trainer.devices` for this job: joblib's parallel jobs on a workstation with several GPUs
    take one each, in turn, rather than all crowding onto GPU 0."""
    if (launcher.get("n_jobs") or 1) != 1 and gpus > 1 and devices == 1 and accelerator in ("auto", "gpu", "cuda"):
        return [job % gpus]
    return devices


@contextmanager
def cuda_check_without_nvml() -> Iterator[None]:
    """Inside, for a process that trains alone (no DDP ranks to fork): `import lightning` makes torch
    check for CUDA through NVML, loading its library on every call, as each optimizer step does
    (a visible share of a stacked sweep's training), so that no check spoils a process
    that Lightning forks for its ranks. The variable is put back afterwards."""
    saved = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved
