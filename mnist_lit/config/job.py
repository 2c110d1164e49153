"""What Hydra tells a training job about itself: the sweep it is part of, the command lines that run
it again, and whether submitit requeued it, in which case it continues from its own directory."""

import logging
import shlex
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_lit.config.checks import plain
from mnist_lit.lit.cluster import SubmititJob
from mnist_lit.sweeps.launchers import submitit_tasks

log = logging.getLogger(__name__)


def sweep_job() -> tuple[dict[str, Any], int]:
    """The launcher config and job number of this Hydra sweep job; empty outside a sweep."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}, 0
    hydra_cfg = HydraConfig.get()
    return plain(hydra_cfg.launcher), hydra_cfg.job.num


def command_lines(cfg: DictConfig, output_dir: Path) -> tuple[str, str]:
    """The command lines that continue this run from its own last checkpoint, and that start it
    again (from the checkpoint it resumed, if any) while it has none."""
    if not HydraConfig.initialized():
        return f'fit(..., "resume={output_dir}")', "fit(...)" if not cfg.resume else f'fit(..., "resume={cfg.resume}")'
    # Quoted as a shell reads them back: an override may hold spaces, brackets or quotes.
    again = ["python", "-m", "mnist_lit", *(o for o in HydraConfig.get().overrides.task if not o.startswith("resume="))]
    return shlex.join([*again, f"resume={output_dir}"]), shlex.join(
        [*again, f"resume={cfg.resume}"] if cfg.resume else again
    )


def submitit_job(cfg: DictConfig, output_dir: Path, launcher: dict[str, Any]) -> tuple[DictConfig, list[SubmititJob]]:
    """The config a submitit job runs, and the callback that marks its checkpoints as its own: once
    submitit requeues it, it resumes from its own last checkpoint in `output_dir`."""
    if submitit_tasks(launcher) is None:
        return cfg, []
    job = SubmititJob()
    if job.requeued(output_dir):
        log.info("Requeued by submitit: job %s continues from its own last checkpoint", job.job_id)
        cfg = cfg.copy()
        cfg.resume = str(output_dir)
    return cfg, [job]
