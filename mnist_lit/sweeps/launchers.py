"""What a launcher can run: Lightning's DDP inside a sweep's jobs, submitit's tasks as a job's
devices, checked before any job is submitted."""

import sys
from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_lit.common.errors import ConfigError


def submitit_tasks(launcher: Mapping[str, Any]) -> tuple[int, int] | None:
    """(tasks per node, nodes) that submitit runs each job as; None for another launcher."""
    if "submitit" not in str(launcher.get("_target_", "")):
        return None
    return launcher.get("tasks_per_node") or 1, launcher.get("nodes") or 1


def validate_launcher(cfg: DictConfig, launcher: DictConfig) -> None:
    """Lightning's DDP starts a job's further ranks by running its command line again (or by
    spawning from it), which a job inside a joblib worker or a submitit process cannot do; submitit
    starts them itself when it runs each job as one task per device (lit/cluster.py)."""
    devices = cfg.trainer.devices
    several = (
        devices == -1
        or (isinstance(devices, int) and devices > 1)
        or (not isinstance(devices, (int, str)) and len(devices) > 1)
    )
    name = str(launcher._target_).rpartition(".")[2]
    tasks = submitit_tasks(launcher)
    if tasks:
        _validate_tasks(cfg, *tasks, several)
        return
    if several and name != "BasicLauncher":
        raise ConfigError(
            f"trainer.devices={devices} inside a sweep run by {name}: Lightning's DDP cannot start ranks from its "
            "workers; sweep with the basic launcher (each job on all its devices in turn), or give each job "
            "trainer.devices=1"
        )


def _validate_tasks(cfg: DictConfig, tasks: int, nodes: int, several: bool) -> None:
    """A submitit job is one DDP run of one task per device: Lightning's devices and nodes must be
    submitit's tasks and nodes."""
    devices, num_nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if tasks == 1 and nodes == 1:
        if several:
            raise ConfigError(
                f"trainer.devices={devices} inside one submitit task: Lightning cannot start ranks from it; "
                f"set hydra.launcher.tasks_per_node={devices if isinstance(devices, int) and devices > 0 else 'N'} "
                "(one task per device), or trainer.devices=1"
            )
        return
    if devices != tasks:
        raise ConfigError(
            f"trainer.devices={devices} with hydra.launcher.tasks_per_node={tasks}: each submitit task is one "
            f"device's rank; set trainer.devices={tasks}"
        )
    if num_nodes != nodes:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} with hydra.launcher.nodes={nodes}: set trainer.num_nodes={nodes}"
        )


class CheckLauncher(Callback):
    """A sweep whose launcher cannot run its jobs as they ask (several devices in a joblib worker,
    submitit tasks that are not the job's devices) is refused before any job is submitted; a sweep
    over such settings (trainer.devices=1,2) still has each job refused on its own."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Missing: a public way to read which overrides a sweep sweeps. Hydra's sweeper plugins
        # parse them with this parser, as its own basic sweeper does (tests/test_internals.py).
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
        swept |= set(config.hydra.sweeper.get("params") or {})
        if swept & {"trainer.devices", "trainer.num_nodes", "hydra.launcher.tasks_per_node", "hydra.launcher.nodes"}:
            return  # the sweep's own config holds none of the values its jobs will have
        try:
            validate_launcher(config, config.hydra.launcher)
        except ConfigError as error:
            # Hydra turns a callback's exceptions into warnings and goes on: stop here, in one line.
            sys.exit(str(error))
