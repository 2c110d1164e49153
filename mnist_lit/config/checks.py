"""Checks of a whole config, composed by Hydra or read from a checkpoint, before any work starts:
its keys, its values, what its `_target_`s name, what it asks of the machine."""

import difflib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from mnist_lit.common.choices import ENGINES, LOGGER_LIBRARIES, METRICS, STAGES, TARGET_KINDS, TARGETS
from mnist_lit.common.errors import ConfigError
from mnist_lit.config.schema import Config

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


def entries(settings: Any, path: str = "") -> Iterator[tuple[str, str, Any, Any]]:
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
        yield from entries(value, where)


def check_targets(settings: Any) -> None:
    """Refuse, naming the key, any `_target_` that is not one of TARGETS at its place, and any
    other key of Hydra's instantiate: what a config names is looked up among the project's own
    choices, so that a config read from a file can call nothing else."""
    for parent, where, key, value in entries(settings):
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
