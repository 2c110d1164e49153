"""Typed configuration. Hydra checks types and keys while composing; `validate` checks values
before any data is read, so a bad override ends in one line that names the key and the fix."""

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, SI, DictConfig, OmegaConf

from mnist_lit import files
from mnist_lit.choices import ACTIVATIONS, INITS, PRECISIONS, STRATEGIES
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
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr} is out of range: it must be > 0, e.g. optimizer.lr=1e-3")


@dataclass
class DataConfig:
    _target_: str = "mnist_lit.data.MNISTDataModule"
    root: str = MISSING
    batch_size: int = 32
    val_size: int = 0
    steps_per_execution: int = 100
    seed: int = SI("${seed}")

    def __post_init__(self) -> None:
        _at_least("data.batch_size", self.batch_size, 1, "data.batch_size=32")
        _at_least("data.val_size", self.val_size, 0, "data.val_size=5000")
        _at_least("data.steps_per_execution", self.steps_per_execution, 1, "data.steps_per_execution=100")


@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    max_epochs: int = 10
    max_steps: int = -1  # optimizer steps (mini-batches) in all; -1: no limit
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
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


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    resume: Optional[str] = None
    # torch threads: a number, or auto: this run's share of the cores (see share.py)
    threads: Any = "auto"
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
    """Check every value: building the dataclasses runs their __post_init__."""
    OmegaConf.to_object(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]))
    threads = cfg.threads
    if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ConfigError(f"threads={threads} is not a number of threads: give one ≥ 1, e.g. threads=2, or threads=auto")



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
