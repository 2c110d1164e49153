"""hydra/launcher=stacked: a sweep's jobs of one shape trained side by side as one batched network
(mnist_lit/runs/stacking.py), each still an ordinary job with its own directory and files. Another
Hydra app's jobs run one after another, as Hydra's basic launcher runs them.

Hydra finds it by scanning the hydra_plugins namespace, in a regular install and in an editable
one alike (pyproject.toml says how). torch is imported only when it launches mnist_lit's jobs."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.mnist_lit_stacked_launcher.stacked_launcher.StackedLauncher"
    max_stack: int = 64  # jobs per batched network, at most: bounds its memory


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="mnist_lit")


def is_mnist_lit(config: DictConfig) -> bool:
    """Whether the sweep is mnist_lit's: its primary config is the one mnist_lit installs."""
    return any(
        (source.provider, source.schema, source.path) == ("main", "pkg", "mnist_lit.conf")
        for source in config.hydra.runtime.config_sources
    )


class StackedLauncher(Launcher):
    def __init__(self, max_stack: int = 64) -> None:
        if max_stack < 1:
            from mnist_lit.common.errors import ConfigError

            raise ConfigError(
                f"hydra.launcher.max_stack={max_stack} is out of range: it must be ≥ 1, e.g. "
                "hydra.launcher.max_stack=16"
            )
        self.max_stack = max_stack

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = idx
            configs.append(cfg)
        if not is_mnist_lit(self.config):
            log.info("Launching %d jobs of another app one by one, as the basic launcher does", len(configs))
            return [self._run(cfg, self.task_function) for cfg in configs]

        from mnist_lit.common.errors import UserError
        from mnist_lit.config.checks import check_machine, task, validate
        from mnist_lit.runs.machine import cores, gpus
        from mnist_lit.startup import heavy_imports

        with heavy_imports():
            from mnist_lit.runs.stacking import shape, why_alone

        groups: dict[str, list[int]] = {}
        machine = {"gpus": gpus(), "cores": cores()}
        for i, cfg in enumerate(configs):
            job = task(cfg)
            try:
                validate(job)
                check_machine(job, **machine)
            except UserError:
                groups.setdefault(f"alone {i}", []).append(i)  # fails as a job of its own, in one line
                continue
            reason = why_alone(job)
            if reason:
                log.info("Job #%s runs alone: %s", cfg.hydra.job.num, reason)
            groups.setdefault(f"alone {i}" if reason else shape(job), []).append(i)
        stacks = [
            group[start : start + self.max_stack]
            for group in groups.values()
            for start in range(0, len(group), self.max_stack)
        ]
        log.info(
            "Stacked %d jobs into %d network%s: %s",
            len(configs),
            len(stacks),
            "s"[: len(stacks) != 1],
            "; ".join(" ".join(f"#{configs[i].hydra.job.num}" for i in stack) for stack in stacks),
        )
        returns: list[JobReturn | None] = [None] * len(configs)
        for stack in stacks:
            if len(stack) == 1:
                returns[stack[0]] = self._run(configs[stack[0]], self.task_function)
            else:
                for i, ret in zip(stack, self._train(stack, configs), strict=True):
                    returns[i] = ret
        return returns  # type: ignore[return-value]

    def _run(self, cfg: DictConfig, task_function: TaskFunction) -> JobReturn:
        log.info("\t#%s : %s", cfg.hydra.job.num, " ".join(filter_overrides(cfg.hydra.overrides.task)))
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _train(self, stack: list[int], configs: list[DictConfig]) -> list[JobReturn]:
        """Each job's directory as Hydra makes it (.hydra/, its log), then one training for all."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from mnist_lit.runs.stacking import Job, train_stack
        from mnist_lit.sweeps.summary import record_failure, summarise

        jobs: list[Job] = []

        def prepare(cfg: DictConfig) -> None:
            jobs.append(Job(cfg, Path(HydraConfig.get().runtime.output_dir)))

        returns = [self._run(configs[i], prepare) for i in stack]
        try:
            train_stack(jobs)
        except Exception as error:  # a bug, not one job's: every job of the stack says so
            for job in jobs:
                job.error = error
                record_failure(job.directory, error)
        except (KeyboardInterrupt, SystemExit) as stop:
            # Ctrl-C (Lightning exits 1 after it) or SIGTERM: the sweep stops, and says where every
            # job stands; resume=<sweep dir> continues each from its own last checkpoint.
            summarise(Path(str(self.config.hydra.sweep.dir)), stopped=True)
            raise SystemExit(143 if isinstance(stop, SIGTERMException) else 130) from None
        for job, ret in zip(jobs, returns, strict=True):
            history = job.member.history.history[job.cfg.objective]
            ret.status = JobStatus.COMPLETED
            ret.return_value = history[-1] if history and not job.failed else float("nan")
        return returns
