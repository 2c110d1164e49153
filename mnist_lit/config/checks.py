"""Checks of a whole config, composed by Hydra or read from a checkpoint, before any work starts:
its keys, its values, what its `_target_`s name, what it asks of the machine and of the launcher."""

import difflib
import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.common.choices import ENGINES, LOGGER_LIBRARIES, METRICS, MOVED, STAGES, TARGET_KINDS, TARGETS
from mnist_lit.common.errors import ConfigError, first_line
from mnist_lit.config.schema import Config
from mnist_lit.share import submitit_tasks

# More torch threads than any workstation has cores; far more than that, torch's OpenMP cannot start.
MAX_THREADS = 1024


def require(cfg: DictConfig, **keys: str) -> None:
    """One line naming the mandatory keys (key=what it takes) that the command line left out."""
    missing = [f"{key}=<{what}>" for key, what in keys.items() if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(f"missing: give {' and '.join(missing)}")


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed config, and that what it asks for is installed."""
    check(cfg)
    if cfg.get("logger") is not None and not (isinstance(cfg.logger, DictConfig) and "_target_" in cfg.logger):
        raise ConfigError(
            f"logger={cfg.logger} is not one of the logger group's options; choose logger=tensorboard, "
            "logger=mlflow or logger=wandb, or leave it out"
        )
    if cfg.get("logger"):
        library, extra = LOGGER_LIBRARIES.get(cfg.logger.get("_target_"), (None, None))
        if library and extra:
            require_installed(f"logger={extra}", (library,), extra)


def require_installed(what: str, libraries: Sequence[str], extra: str, otherwise: str = "") -> None:
    """One line naming the optional extra to install, when `what` needs libraries that are not there."""
    missing = [name for name in libraries if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f'pip install "mnist_lit[{extra}]"{otherwise}'
        )


def task(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own node: what the job was asked to do."""
    return OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A config as plain, resolved dicts and lists, as checkpoints and comparisons hold it."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def check(cfg: DictConfig) -> None:
    """Check every value, a composed config's or a checkpoint's alike: building the dataclasses runs
    their __post_init__, and every `_target_` must be one of the project's own (check_targets)."""
    job = task(cfg)
    _check_keys(job, OmegaConf.structured(Config))
    OmegaConf.to_object(job)
    for key in ("seed", "data.seed"):
        seed = OmegaConf.select(job, key)
        if not 0 <= seed < 2**32:
            raise ConfigError(f"{key}={seed} is out of range: a seed is in [0, 2**32 - 1], e.g. {key}=0")
    check_targets(plain(job))
    threads = cfg.threads
    if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ConfigError(
            f"threads={threads} is not a number of threads: give one ≥ 1, e.g. threads=2, or threads=auto"
        )
    if threads != "auto" and threads > MAX_THREADS:
        raise ConfigError(f"threads={threads} is out of range: at most {MAX_THREADS}, e.g. threads=2, or threads=auto")
    if cfg.objective not in METRICS:
        raise ConfigError(f"objective={cfg.objective} is not a metric; choose one of: {', '.join(METRICS)}")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine={cfg.engine} is unknown; choose one of: {', '.join(ENGINES)}")
    asked = lightnings_own(cfg)
    if cfg.engine == "fast" and asked:
        raise not_fast(asked)
    stopping = cfg.early_stopping
    if stopping.patience is not None and stopping.monitor.startswith("val_") and cfg.trainer.limit_val_batches == 0:
        raise ConfigError(
            f"early_stopping.monitor={stopping.monitor} with trainer.limit_val_batches=0: nothing is validated to "
            "watch; monitor loss or accuracy, or validate"
        )


def not_fast(asked: list[str]) -> ConfigError:
    """engine=fast's refusal of what only Lightning's loop does."""
    return ConfigError(
        f"engine=fast does not do {', '.join(asked)}: leave engine=auto, which trains such a run in Lightning's loop"
    )


def lightnings_own(cfg: DictConfig) -> list[str]:
    """The settings of `cfg`, as overrides, that only Lightning's loop does: the fast engine takes
    one optimizer step per mini-batch, many mini-batches to a Lightning step, so it can neither
    group steps, clip before one, nor stop or validate between two of an execution, and Lightning
    would count its batches in executions (a limit of 0, which turns a loop off, counts nothing)."""
    trainer = cfg.trainer
    interval = trainer.val_check_interval
    asked = {
        "accumulate_grad_batches": trainer.accumulate_grad_batches != 1,
        "gradient_clip_val": bool(trainer.gradient_clip_val),
        "max_steps": trainer.max_steps != -1,
        "val_check_interval": isinstance(interval, int) and not isinstance(interval, bool),
        "detect_anomaly": trainer.detect_anomaly,
        "fast_dev_run": bool(trainer.fast_dev_run),
        "overfit_batches": bool(trainer.overfit_batches),
        "num_sanity_val_steps": (trainer.num_sanity_val_steps or 0) > 0,
        **{f"limit_{stage}_batches": trainer[f"limit_{stage}_batches"] not in (None, 0) for stage in STAGES},
    }
    # As the command line spells them: true, not Python's True.
    return [f"trainer.{name}={str(trainer[name]).lower()}" for name, on in asked.items() if on]


def _check_keys(cfg: DictConfig, schema: DictConfig, path: str = "") -> None:
    """Refuse a key that the schema does not have (Hydra's `+key=value` adds one), with the nearest real one."""
    for key in map(str, cfg):
        where = f"{path}.{key}" if path else key
        if key not in schema.keys():  # `in` alone says no for a key whose value is missing
            keys = [str(k) for k in schema.keys() if not str(k).startswith("_")]
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}? " if close else ""
            raise ConfigError(
                f"{where} is not a setting: {hint}Settings{' of ' + path if path else ''}: {', '.join(keys)}"
            )
        if (
            OmegaConf.get_type(schema, key) not in (None, dict, Any)
            and isinstance(cfg[key], DictConfig)
            and isinstance(schema[key], DictConfig)
        ):
            _check_keys(cfg[key], schema[key], where)


# Hydra's instantiate keys besides _target_ (and the optimizer's _partial_, which must stay true):
# each would make instantiate call or pass something the project did not choose.
_INSTANTIATE_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")


def _entries(settings: Any, path: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """Every entry of nested mappings and lists, depth first: (its parent's path, its own path,
    its key or index, its value)."""
    if isinstance(settings, Mapping):
        items = ((f"{path}.{key}" if path else str(key), key, value) for key, value in settings.items())
    elif isinstance(settings, list):
        items = ((f"{path}[{i}]", i, value) for i, value in enumerate(settings))
    else:
        return
    for where, key, value in items:
        yield path, where, key, value
        yield from _entries(value, where)


def check_targets(settings: Any) -> None:
    """Refuse, naming the key, any `_target_` that is not one of TARGETS at its place, and any
    other key of Hydra's instantiate: what a config names is looked up among the project's own
    choices, so that a config read from a file can call nothing else."""
    for parent, where, key, value in _entries(settings):
        if key == "_target_":
            if parent not in TARGETS:
                raise ConfigError(f"{where}={value}: mnist_lit builds nothing from {parent}; remove its _target_")
            if value not in TARGETS[parent]:
                raise ConfigError(
                    f"{where}={value} is not one of mnist_lit's {TARGET_KINDS[parent]}; choose one of: "
                    f"{', '.join(TARGETS[parent])}"
                )
        elif key in _INSTANTIATE_KEYS and not (where == "optimizer._partial_" and value is True):
            raise ConfigError(f"{where}={value}: mnist_lit builds its objects itself; remove {key}")


def config_of(saved: Mapping[str, Any], where: str) -> DictConfig:
    """A config saved in a file (a checkpoint's hyper-parameters), read as data: into the typed
    schema, keys added since it was saved taking their defaults, and checked by the rules a composed
    config passes. `where` (e.g. "checkpoint=x.ckpt") begins the one line that refuses it."""
    try:
        _refuse_interpolations(saved)
        saved = _moved(saved)
        check_targets(saved)
        cfg = cast(DictConfig, OmegaConf.merge(OmegaConf.structured(Config), dict(saved)))
        check(cfg)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        raise ConfigError(f"{where}: its config does not fit mnist_lit's ({first_line(error)})") from None
    return cfg


def _moved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """`saved` with the `_target_`s of a checkpoint saved before a class moved named as they are now."""
    moved = {key: dict(value) if isinstance(value, Mapping) else value for key, value in saved.items()}
    for part in moved.values():
        if isinstance(part, dict) and part.get("_target_") in MOVED:
            part["_target_"] = MOVED[part["_target_"]]
    return moved


def _refuse_interpolations(settings: Any) -> None:
    """A saved config holds plain values (it is saved resolved): an ${...} in it would run a resolver."""
    for _, where, _, value in _entries(settings):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{where}={value} is an interpolation; a saved config holds plain values only")


def check_machine(cfg: DictConfig, gpus: int, cores: int) -> None:
    """What the devices ask of the machine the job runs on (a launcher may send it to another)."""
    accelerator, devices = cfg.trainer.accelerator, cfg.trainer.devices
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no GPU found here; use trainer.accelerator=cpu (or auto)"
        )
    if accelerator == "cpu" or (accelerator == "auto" and gpus == 0):
        if devices == -1 or not isinstance(devices, (int, str)) or (isinstance(devices, str) and devices != "auto"):
            raise ConfigError(
                f"trainer.devices={devices} names GPUs, and this run trains on the CPU: give a number of processes, "
                "e.g. trainer.devices=2"
            )
        if isinstance(devices, int) and devices > cores:
            raise ConfigError(
                f"trainer.devices={devices} CPU processes on {cores} core{'s'[: cores > 1]}: give at most "
                f"trainer.devices={cores}"
            )


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
