"""Typed configuration. Hydra checks types and keys while composing; `validate` checks values
before any data is read, so a bad override ends in one line that names the key and the fix."""

import difflib
import importlib.util
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, SI, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit import files
from mnist_lit.choices import (
    ACCELERATORS, ACTIVATIONS, DATASETS, INITS, LOGGER_LIBRARIES, METRICS, PRECISIONS, STRATEGIES, TARGET_KINDS, TARGETS,
)
from mnist_lit.errors import ConfigError


def _at_least(key: str, value: int | float, low: int | float, example: str) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} is out of range: it must be ≥ {low}, e.g. {example}")


@dataclass
class ModelConfig:
    _target_: str = "mnist_lit.network.DenseNetwork"
    hidden: list[int] = field(default_factory=list)
    activation: str = "relu"
    init: str = "keras"

    def __post_init__(self) -> None:
        if any(width < 1 for width in self.hidden):
            raise ConfigError(
                f"model.hidden={list(self.hidden)}: every width must be ≥ 1, e.g. model.hidden=[100] or [256,128]"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation={self.activation} is unknown; choose one of: {', '.join(sorted(ACTIVATIONS))}"
            )
        if self.init not in INITS:
            raise ConfigError(f"model.init={self.init} is unknown; choose one of: {', '.join(INITS)}")


@dataclass
class LossConfig:
    _target_: str = MISSING


@dataclass
class OptimizerConfig:
    # Adam with Keras's defaults; PyTorch's own eps is 1e-8.
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optimizer.lr={self.lr} is out of range: it must be > 0 and finite, e.g. optimizer.lr=1e-3")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ConfigError(
                f"optimizer.betas={list(self.betas)} is out of range: two numbers, each in [0, 1), e.g. optimizer.betas=[0.9,0.999]"
            )
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"optimizer.eps={self.eps} is out of range: it must be > 0 and finite, e.g. optimizer.eps=1e-7")


@dataclass
class DataConfig:
    _target_: str = "mnist_lit.data.MNISTDataModule"
    root: str = MISSING
    batch_size: int = 32
    val_size: int = 0
    steps_per_execution: int = 100
    seed: int = SI("${seed}")
    dataset: str = "MNIST"  # or FashionMNIST, KMNIST: data=fashion_mnist, data=kmnist

    def __post_init__(self) -> None:
        _at_least("data.batch_size", self.batch_size, 1, "data.batch_size=32")
        _at_least("data.val_size", self.val_size, 0, "data.val_size=5000")
        _at_least("data.steps_per_execution", self.steps_per_execution, 1, "data.steps_per_execution=100")
        if self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset={self.dataset} is unknown; choose one of: {', '.join(DATASETS)}")


@dataclass
class TrainerConfig:
    """Every argument of lightning.Trainer (tests/test_config.py checks this against its signature)
    but those in OWNED_BY_PROJECT, with Lightning's defaults unless a comment says otherwise.

    Lightning's batches are mnist_lit's executions of `data.steps_per_execution` mini-batches, so
    the arguments that count batches (limit_*_batches, accumulate_grad_batches, max_steps) are
    counted in mini-batches here, as a Lightning user means them, and the engine honours them."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = 1  # Lightning's is "auto": one device, unless you ask for DDP
    num_nodes: int = 1
    precision: str = "32-true"
    fast_dev_run: Any = False
    max_epochs: Optional[int] = 10  # the tutorial's
    min_epochs: Optional[int] = None
    max_steps: int = -1  # optimizer steps (mini-batches) in all; -1: no limit
    min_steps: Optional[int] = None
    max_time: Any = None
    limit_train_batches: Any = None  # mini-batches per epoch (a number), or a fraction of them
    limit_val_batches: Any = None  # mini-batches of batch_size images, or a fraction
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    enable_checkpointing: Optional[bool] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = False  # the run prints Keras's summary() instead
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: Optional[str] = None  # norm (when a value is given) or value
    deterministic: Any = None
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Optional[str] = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    enable_autolog_hparams: bool = True
    model_registry: Optional[str] = None

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"trainer.accelerator={self.accelerator} is not supported; choose one of: {', '.join(ACCELERATORS)}")
        _check_devices(self.devices)
        _check_duration("trainer.max_time", self.max_time)
        if self.max_epochs is not None and self.max_epochs != -1:
            _at_least("trainer.max_epochs", self.max_epochs, 1, "trainer.max_epochs=10")
        if self.max_steps != -1:
            _at_least("trainer.max_steps", self.max_steps, 1, "trainer.max_steps=1000 (or -1: no limit)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={self.precision} is not supported; choose one of: {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"trainer.strategy={self.strategy} is not supported: mnist_lit's engine all-reduces each mini-batch's "
                f"gradients with Lightning's DDP; choose one of: {', '.join(STRATEGIES)}"
            )
        _at_least("trainer.accumulate_grad_batches", self.accumulate_grad_batches, 1, "trainer.accumulate_grad_batches=4")
        if self.gradient_clip_val is not None:
            _at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0, "trainer.gradient_clip_val=1.0")
        if self.gradient_clip_algorithm not in (None, "norm", "value"):
            raise ConfigError(
                f"trainer.gradient_clip_algorithm={self.gradient_clip_algorithm} is unknown; choose norm or value"
            )
        for stage in ("train", "val", "test", "predict"):
            _check_limit(f"trainer.limit_{stage}_batches", getattr(self, f"limit_{stage}_batches"))
        fast = self.fast_dev_run
        if not isinstance(fast, bool) and not (isinstance(fast, int) and fast >= 1):
            raise ConfigError(f"trainer.fast_dev_run={fast} is neither true/false nor a number of batches ≥ 1")
        if self.barebones:
            raise ConfigError(
                "trainer.barebones=true turns off the logging that mnist_lit's history, checkpoints and early stopping "
                "read; leave it false: the engine already runs many mini-batches per Lightning step"
            )
        if self.deterministic not in (None, True, False, "warn"):
            raise ConfigError(f"trainer.deterministic={self.deterministic} is not one of: true, false, warn")


def _check_devices(devices: Any) -> None:
    """Lightning's forms: a number of devices (-1: every GPU), auto, or GPU indices as a list or "0,1"."""
    fine = (
        devices == "auto"
        or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
        or (isinstance(devices, str) and re.fullmatch(r"\d+(,\d+)*,?", devices.strip()) is not None)
        or (isinstance(devices, list) and devices and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices))
    )
    if not fine:
        raise ConfigError(
            f"trainer.devices={devices} is not a number of devices: give one ≥ 1 (e.g. trainer.devices=2), -1 for every "
            "GPU, a list of GPU indices (trainer.devices=[0,1]) or auto"
        )


# timedelta's keywords: Lightning's Timer takes a dict of them too.
_DURATION_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def _check_duration(key: str, duration: Any) -> None:
    """Lightning's forms of a duration: "DD:HH:MM:SS", or a dict such as {hours: 1}."""
    if duration is None:
        return
    if isinstance(duration, str) and re.fullmatch(r"\d+:\d+:\d+:\d+", duration.strip()):
        return
    if isinstance(duration, dict) and duration and set(duration) <= set(_DURATION_KEYS) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in duration.values()
    ):
        return
    raise ConfigError(f"{key}={duration} is not a duration: give days:hours:minutes:seconds, e.g. {key}=00:01:30:00, or {key}={{hours:1}}")


def _check_limit(key: str, limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, float) and not 0 <= limit <= 1:
        raise ConfigError(f"{key}={limit} is out of range: a fraction is between 0.0 and 1.0; a number of mini-batches is an integer")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ConfigError(f"{key}={limit} is not a limit: give a number of mini-batches, e.g. {key}=10, or a fraction, e.g. 0.25")


@dataclass
class TensorBoardConfig:
    """logger=tensorboard: Lightning's TensorBoardLogger, in <run>/tensorboard
    (tensorboard --logdir outputs; pip install "mnist_lit[tensorboard]")."""

    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = "."  # relative to the run's directory
    name: str = "tensorboard"
    version: str = ""
    default_hp_metric: bool = False
    log_graph: bool = False
    prefix: str = ""


@dataclass
class MLflowConfig:
    """logger=mlflow: Lightning's MLFlowLogger (pip install "mnist_lit[mlflow]"). Without a
    tracking_uri (a server, e.g. http://localhost:5000, or a database), a store of the run's own:
    <run>/mlflow.db, artifacts in <run>/mlartifacts."""

    _target_: str = "lightning.pytorch.loggers.MLFlowLogger"
    experiment_name: str = "mnist_lit"
    run_name: Optional[str] = None  # None: the run's directory
    tracking_uri: Optional[str] = None
    tags: Optional[dict[str, str]] = None
    log_model: bool = False
    prefix: str = ""


@dataclass
class EarlyStoppingConfig:
    """Keras's EarlyStopping: stop once `monitor` has not improved by `min_delta` for `patience`
    epochs; null patience: never. `restore_best_weights` tests (and keeps) the best epoch's weights."""

    patience: Optional[int] = None
    monitor: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0
    restore_best_weights: bool = False

    def __post_init__(self) -> None:
        if self.patience is not None:
            _at_least("early_stopping.patience", self.patience, 0, "early_stopping.patience=3")
        if self.monitor not in METRICS:
            raise ConfigError(f"early_stopping.monitor={self.monitor} is not a metric; choose one of: {', '.join(METRICS)}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"early_stopping.mode={self.mode} is unknown; choose min (a loss) or max (an accuracy)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 0
    resume: Optional[str] = None
    # torch threads: a number, or auto: this run's share of the cores (see share.py)
    threads: Any = "auto"
    # The metric whose last epoch's value a run returns: what a sweeper such as Optuna's optimises.
    objective: str = "val_accuracy"
    # A Lightning logger from the logger group (conf/logger), or None: metrics.csv and pictures only.
    logger: Any = None
    # On a GPU, each execution is recorded once as a CUDA graph and replayed; false: plain eager, for debugging.
    capture: bool = True


@dataclass
class EvaluateConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    split: str = "test"  # test, or val: the images that the run's data.val_size held out
    data: DataConfig = field(default_factory=DataConfig)  # data.root only: the rest is the run's


@dataclass
class PredictConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    images: str = MISSING  # an image file, a folder of them, or a glob such as 'digits/*.png'


def require(cfg: DictConfig, **keys: str) -> None:
    """One line naming the mandatory keys (key=what it takes) that the command line left out."""
    missing = [f"{key}=<{what}>" for key, what in keys.items() if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(f"missing: give {' and '.join(missing)}")


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed config, and that what it asks for is installed."""
    check(cfg)
    if cfg.get("logger"):
        library, extra = LOGGER_LIBRARIES.get(cfg.logger.get("_target_"), (None, None))
        if library and importlib.util.find_spec(library) is None:
            raise ConfigError(f'logger={extra} needs {library}, which is not installed: pip install "mnist_lit[{extra}]"')


def check(cfg: DictConfig) -> None:
    """Check every value, a composed config's or a checkpoint's alike: building the dataclasses runs
    their __post_init__, and every `_target_` must be one of the project's own (check_targets)."""
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    _check_keys(task, OmegaConf.structured(Config))
    OmegaConf.to_object(task)
    for key in ("seed", "data.seed"):
        seed = OmegaConf.select(task, key)
        if not 0 <= seed < 2**32:
            raise ConfigError(f"{key}={seed} is out of range: a seed is in [0, 2**32 - 1], e.g. {key}=0")
    check_targets(OmegaConf.to_container(task, resolve=True))
    threads = cfg.threads
    if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ConfigError(f"threads={threads} is not a number of threads: give one ≥ 1, e.g. threads=2, or threads=auto")
    if cfg.objective not in METRICS:
        raise ConfigError(f"objective={cfg.objective} is not a metric; choose one of: {', '.join(METRICS)}")
    interval = cfg.trainer.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool) and interval % cfg.data.steps_per_execution:
        raise ConfigError(
            f"trainer.val_check_interval={interval} mini-batches is not a whole number of executions: make it a "
            f"multiple of data.steps_per_execution={cfg.data.steps_per_execution}, or give a fraction of an epoch, e.g. 0.5"
        )
    # The engine's accumulation ends with each execution, where Lightning's ends with the epoch.
    if cfg.data.steps_per_execution % cfg.trainer.accumulate_grad_batches:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} does not divide "
            f"data.steps_per_execution={cfg.data.steps_per_execution}: make the latter a multiple of it"
        )


def _check_keys(cfg: DictConfig, schema: DictConfig, path: str = "") -> None:
    """Refuse a key that the schema does not have (Hydra's `+key=value` adds one), with the nearest real one."""
    for key in cfg:
        where = f"{path}.{key}" if path else str(key)
        if key not in schema.keys():  # `in` alone says no for a key whose value is missing
            keys = [k for k in schema.keys() if not str(k).startswith("_")]
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}? " if close else ""
            raise ConfigError(f"{where} is not a setting: {hint}Settings{' of ' + path if path else ''}: {', '.join(keys)}")
        if OmegaConf.get_type(schema, key) not in (None, dict, Any) and isinstance(cfg[key], DictConfig) and isinstance(schema[key], DictConfig):
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
                    f"{where}={value} is not one of mnist_lit's {TARGET_KINDS[parent]}; choose one of: {', '.join(TARGETS[parent])}"
                )
        elif key in _INSTANTIATE_KEYS and not (where == "optimizer._partial_" and value is True):
            raise ConfigError(f"{where}={value}: mnist_lit builds its objects itself; remove {key}")


def config_of(saved: Mapping[str, Any], where: str) -> DictConfig:
    """A config saved in a file (a checkpoint's hyper-parameters), read as data: into the typed
    schema, keys added since it was saved taking their defaults, and checked by the rules a composed
    config passes. `where` (e.g. "checkpoint=x.ckpt") begins the one line that refuses it."""
    try:
        _refuse_interpolations(saved)
        check_targets(saved)
        cfg = OmegaConf.merge(OmegaConf.structured(Config), dict(saved))
        check(cfg)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{where}: its config does not fit mnist_lit's ({detail})") from None
    return cfg


def _refuse_interpolations(settings: Any) -> None:
    """A saved config holds plain values (it is saved resolved): an ${...} in it would run a resolver."""
    for _, where, _, value in _entries(settings):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{where}={value} is an interpolation; a saved config holds plain values only")


def check_machine(cfg: DictConfig, gpus: int, cores: int) -> None:
    """What the devices ask of the machine the job runs on (a launcher may send it to another)."""
    accelerator, devices = cfg.trainer.accelerator, cfg.trainer.devices
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(f"trainer.accelerator={accelerator}: no GPU found here; use trainer.accelerator=cpu (or auto)")
    if accelerator == "cpu" or (accelerator == "auto" and gpus == 0):
        if devices == -1 or not isinstance(devices, (int, str)) or (isinstance(devices, str) and devices != "auto"):
            raise ConfigError(
                f"trainer.devices={devices} names GPUs, and this run trains on the CPU: give a number of processes, e.g. trainer.devices=2"
            )
        if isinstance(devices, int) and devices > cores:
            raise ConfigError(
                f"trainer.devices={devices} CPU processes on {cores} core{'s'[: cores > 1]}: give at most trainer.devices={cores}"
            )


def validate_launcher(cfg: DictConfig, launcher: str) -> None:
    """Lightning's DDP starts a job's further ranks by running its command line again (or by
    spawning from it), which a job inside a joblib worker or a submitit process cannot do."""
    devices = cfg.trainer.devices
    several = devices == -1 or (isinstance(devices, int) and devices > 1) or (not isinstance(devices, (int, str)) and len(devices) > 1)
    name = launcher.rpartition(".")[2]
    if several and name != "BasicLauncher":
        raise ConfigError(
            f"trainer.devices={devices} inside a sweep run by {name}: Lightning's DDP cannot start ranks from its "
            "workers; sweep with the basic launcher (each job on all its devices in turn), or give each job trainer.devices=1"
        )


def unique_dir(path: str) -> str:
    """Create `path`, or `path-1`, `path-2`, ... if taken, and return it: two runs started in the
    same second get two directories, and nothing a run wrote is written over."""
    base = Path(path)
    files.directory(base.parent)
    for n in itertools.count():
        candidate = base.with_name(f"{base.name}-{n}") if n else base
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError:
            files.directory(candidate)  # says why, in one line
        return str(candidate)
    raise AssertionError("unreachable")


ConfigStore.instance().store(name="schema", node=Config)
# The logger group's options besides conf/logger/none.yaml, typed.
ConfigStore.instance().store(group="logger", name="tensorboard", node=TensorBoardConfig)
ConfigStore.instance().store(group="logger", name="mlflow", node=MLflowConfig)
ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
ConfigStore.instance().store(name="predict_schema", node=PredictConfig)
def sweep_dir(resume: str | None, path: str) -> str:
    """A sweep's directory: the one `resume=` names when it is a sweep's (its jobs go on where
    they were), else a new one."""
    if resume and (Path(resume) / "multirun.yaml").is_file():
        return resume
    return unique_dir(path)


# Cached per composed config, so each run creates its directory exactly once.
OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sweep_dir", sweep_dir, use_cache=True, replace=True)
