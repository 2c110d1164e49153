"""A submitit job of several tasks as one DDP run: each task is one of Lightning's ranks.

submitit starts the tasks (on Slurm through srun, one per GPU; in its local executor as processes
of this machine), so Lightning must start none: its own launcher would run submitit's entry script
again with arguments it rejects (Hydra #2231). Each task's rank, the world size and the main
address come from submitit's JobEnvironment, which reads them on Slurm and in the local executor
alike (the local executor sets no SLURM_* variable), so that a test on one machine runs the path a
cluster runs.
"""

from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment


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
        return False  # never picked on its own: build.py hands it to the Trainer in a submitit job

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
