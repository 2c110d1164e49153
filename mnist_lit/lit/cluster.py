"""A submitit job of several tasks as one DDP run: each task is one of Lightning's ranks.

submitit starts the tasks (on Slurm through srun, one per GPU; in its local executor as processes
of this machine), so Lightning must start none: its own launcher would run submitit's entry script
again with arguments it rejects (Hydra #2231). Each task's rank, the world size and the main
address come from submitit's JobEnvironment, which reads them on Slurm and in the local executor
alike (the local executor sets no SLURM_* variable), so that a test on one machine runs the path a
cluster runs. Every submitit job, of one task too, gets this environment, never Lightning's
SLURMEnvironment: its auto-requeue would requeue the job beside submitit's own.

Pre-emption and time limits are submitit's: its signal requeues the job (Hydra's launcher runs the
same job again), and the run then continues from the last checkpoint that this job left in its
directory (SubmititJob). A SIGTERM stops the run cleanly after the step, as everywhere, then hands
over to submitit's requeue (hand_over_to_submitit).
"""

import os
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment

from mnist_lit.lit.saving import verified


class SubmititEnvironment(ClusterEnvironment):
    """This task's place in its submitit job, as Lightning asks for it."""

    def __init__(self) -> None:
        import submitit

        super().__init__()
        self.job = submitit.JobEnvironment()

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return str(self.job.hostnames[0])

    @property
    def main_port(self) -> int:
        # Every task works out the same port from the job's id, as Lightning's SLURMEnvironment does.
        digits = "".join(c for c in str(self.job.job_id) if c.isdigit())
        return 15000 + int(digits[-4:] or 0)

    @staticmethod
    def detect() -> bool:
        return False  # never picked on its own: runs/build.py hands it to the Trainer in a submitit job

    def world_size(self) -> int:
        return int(self.job.num_tasks)

    def set_world_size(self, size: int) -> None:
        pass  # submitit's, not Lightning's, to set

    def global_rank(self) -> int:
        return int(self.job.global_rank)

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return int(self.job.local_rank)

    def node_rank(self) -> int:
        return int(self.job.node)


class SubmititJob(L.Callback):
    """Puts the submitit job's id into each checkpoint, so that the job, requeued by submitit after
    pre-emption or a time limit, tells its own last checkpoint from one that another job left in
    the same directory."""

    def __init__(self) -> None:
        import submitit

        self.job_id = str(submitit.JobEnvironment().job_id)

    def state_dict(self) -> dict[str, str]:
        return {"job_id": self.job_id}

    def requeued(self, directory: Path) -> bool:
        """Whether this is a requeued run of the job that wrote `directory`'s last checkpoint."""
        last = directory / "checkpoints" / "last.ckpt"
        if not last.exists():
            return False
        saved = verified(torch.load(last, map_location="cpu", weights_only=True), last).get("callbacks", {})
        return bool(saved.get(self.state_key, {}).get("job_id") == self.job_id)


def hand_over_to_submitit() -> None:
    """A stop by SIGTERM, handed to submitit: its own pre-emption signal, whose handler (set as the
    job started) checkpoints the job as Hydra's launcher defines it (the same job again), requeues
    it and exits with the code submitit expects. On a rank other than 0 the handler does nothing."""
    # submitit's documented setting: SUBMITIT_PREEMPT_SIGNAL, USR2 unless it names another.
    os.kill(os.getpid(), signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"])
