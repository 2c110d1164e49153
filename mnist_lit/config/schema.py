"""The typed configuration that conf/ composes with: every key, its type and its default, and its
policies. Hydra checks types and keys while composing; each part checks its own values as it is
built (config/values.py), and config/checks.py the whole, so a bad override ends in one line that
names the key and the fix.

A setting's policies are declared beside it, once (`setting`): whether a resume may change it,
whether a stack of networks honours it, and who takes it. Resume (config/checkpoints.py), the stacked
launcher (runs/stacking.py) and the builder (build.py) read them from here (`policies`), so adding
a setting is adding its field."""

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, SI

from mnist_lit.common.choices import (
    ACCELERATORS,
    ACTIVATIONS,
    DATASETS,
    INITS,
    METRICS,
    OWNED_BY_PROJECT,
    PRECISIONS,
    PROFILERS,
    STRATEGIES,
)
from mnist_lit.common.errors import ConfigError
from mnist_lit.config.values import (
    at_least,
    at_least_or,
    check_devices,
    check_duration,
    check_fraction_or_count,
    check_limit,
)
from mnist_lit.lit.internals import trainer_arguments


class Resume(str, Enum):
    """What a resumed run may do with a setting. By default it must keep the checkpoint's value (the
    network, the loss, Adam's betas and eps, the data, its order and batches, the precision, ...)."""

    SAME = "same"
    # Where and how it runs, what it shows, logs and keeps: the numbers do not depend on it (up to
    # float rounding), and a mini-batch is the same whatever execution it is run in.
    UNSEEN = "unseen"
    # When it stops: the epochs before the resume are those it would have trained.
    UNTIL = "until"
    # What the steps after the resume do, or what is measured: applied from there on.
    FROM_HERE_ON = "from here on"


class Stacked(str, Enum):
    """What the stacked launcher does with a setting."""

    SHARED = "shared"  # a stack honours it as a run does; the networks of a stack share its value
    OWN = "own"  # each network of a stack has its own
    ALONE = "alone"  # a value other than its default: the job runs alone, as a run


class Taker(str, Enum):
    """Who takes a Trainer argument."""

    LIGHTNING = "lightning"
    TIMER = "timer"  # the run's own Timer: max_time


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    resume: Resume | None = None,
    stack: Stacked | None = None,
    alone: str = "",
    taken_by: Taker | None = None,
) -> Any:
    """A field and its policies (None: as the field that holds it, or the default). `alone`: why a
    stack leaves a job that sets it (Stacked.ALONE)."""
    declared = {"resume": resume, "stack": stack, "alone": alone or None, "taken_by": taken_by}
    metadata = {name: value for name, value in declared.items() if value is not None}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class _Lightnings:
    """The default of a declared Trainer argument that is Lightning's own (lightnings_arguments)."""


LIGHTNINGS: Any = _Lightnings()


def argument(default: Any = LIGHTNINGS, **policies: Any) -> Any:
    """A Trainer argument: Lightning's, with Lightning's default unless one is given, and a job that
    changes it runs alone unless said otherwise."""
    return setting(default, **{"stack": Stacked.ALONE, "taken_by": Taker.LIGHTNING, **policies})


def lightnings_arguments(cls: type) -> type:
    """`cls` with every argument of lightning.Trainer but those the project owns: those it declares
    take Lightning's default where they name none; any other is Lightning's as it is (typed as its
    default where that is a bool), so that a new Trainer argument is a setting with nothing added."""
    annotations = cls.__annotations__  # the class's own: it declares fields
    for name, default in trainer_arguments().items():
        if name in OWNED_BY_PROJECT:
            continue
        if name not in annotations:
            annotations[name] = bool if isinstance(default, bool) else Any
            setattr(cls, name, argument(default))
        elif getattr(cls, name).default is LIGHTNINGS:
            getattr(cls, name).default = default
    return cls


def policies(name: str, schema: type | None = None, prefix: str = "", inherited: Any = None) -> dict[str, Any]:
    """Each setting's policy `name` ("resume", "stack", "alone", "taken_by"), by dotted key: as its
    field declares it, else as the field that holds it does, else None."""
    found: dict[str, Any] = {}
    for each in dataclasses.fields(schema or Config):
        if each.name.startswith("_"):
            continue
        key, value = f"{prefix}{each.name}", each.metadata.get(name, inherited)
        if isinstance(each.type, type) and dataclasses.is_dataclass(each.type):
            found[key] = value
            found |= policies(name, each.type, f"{key}.", value)
        else:
            found[key] = value
    return found


def taken_by(taker: Taker) -> tuple[str, ...]:
    """The Trainer arguments that `taker` takes."""
    return tuple(key for key, value in policies("taken_by", TrainerConfig).items() if value == taker)


def policy(name: str, key: str, default: Any, schema: type | None = None) -> Any:
    """Policy `name` of the setting `key`, or of the nearest group above it that has one (a key
    below a group of no schema, such as a logger's, is its group's)."""
    declared = policies(name, schema)
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        value = declared.get(".".join(parts[:end]))
        if value is not None:
            return value
    return default


@dataclass
class ModelConfig:
    _target_: str = "mnist_lit.nn.network.DenseNetwork"
    # Each network of a stack its own widths (nn/stacked.py pads them); its depth is the stack's.
    hidden: list[int] = setting(factory=list, stack=Stacked.OWN)
    activation: str = setting("relu", stack=Stacked.OWN)
    init: str = setting("keras", stack=Stacked.OWN)

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
    lr: float = setting(1e-3, resume=Resume.FROM_HERE_ON, stack=Stacked.OWN)  # StackedAdam: one per network
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(
                f"optimizer.lr={self.lr} is out of range: it must be > 0 and finite, e.g. optimizer.lr=1e-3"
            )
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ConfigError(
                f"optimizer.betas={list(self.betas)} is out of range: two numbers, each in [0, 1), e.g. "
                "optimizer.betas=[0.9,0.999]"
            )
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(
                f"optimizer.eps={self.eps} is out of range: it must be > 0 and finite, e.g. optimizer.eps=1e-7"
            )


@dataclass
class DataConfig:
    _target_: str = "mnist_lit.lit.data.MNISTDataModule"
    root: str = setting(MISSING, resume=Resume.UNSEEN)
    batch_size: int = 32
    val_size: int = 0  # a stack holds them out as each run does: one data.seed per stack (runs/stacking.py shape)
    steps_per_execution: int = setting(100, resume=Resume.UNSEEN)
    seed: int = setting(SI("${seed}"), stack=Stacked.OWN)
    dataset: str = "MNIST"  # or FashionMNIST, KMNIST: data=fashion_mnist, data=kmnist

    def __post_init__(self) -> None:
        at_least("data.batch_size", self.batch_size, 1, "data.batch_size=32")
        at_least("data.val_size", self.val_size, 0, "data.val_size=5000")
        at_least("data.steps_per_execution", self.steps_per_execution, 1, "data.steps_per_execution=100")
        if self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset={self.dataset} is unknown; choose one of: {', '.join(DATASETS)}")


@dataclass
@lightnings_arguments
class TrainerConfig:
    """Every argument of lightning.Trainer but those in OWNED_BY_PROJECT, `trainer.<name>=value`.
    Declared here: those with a rule of the project's (a resume or stacking policy, a check of
    their values, a type) or the tutorial's default, each said once; Lightning's default unless a
    comment says otherwise. lightnings_arguments adds the rest as Lightning has them.

    What counts batches (limits, fast_dev_run, overfit_batches, a number of sanity steps) counts
    mini-batches, as a Lightning user means them: engine=auto trains such a run in Lightning's
    loop. A job that changes any argument but those a stack shares runs alone."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = argument(resume=Resume.UNSEEN, stack=Stacked.SHARED)
    strategy: str = argument(resume=Resume.FROM_HERE_ON)
    devices: Any = argument(1, resume=Resume.FROM_HERE_ON)  # Lightning's is "auto": one device, unless you ask for DDP
    num_nodes: int = argument(resume=Resume.FROM_HERE_ON)
    precision: str = argument("32-true")
    fast_dev_run: Any = argument()
    max_epochs: int | None = argument(10, resume=Resume.UNTIL, stack=Stacked.SHARED)  # the tutorial's
    min_epochs: int | None = argument(resume=Resume.UNTIL)
    max_steps: int = argument(resume=Resume.UNTIL)  # optimizer steps in all; -1: no limit
    min_steps: int | None = argument(resume=Resume.UNTIL)
    max_time: Any = argument(resume=Resume.UNTIL, taken_by=Taker.TIMER)
    limit_train_batches: Any = argument()
    limit_val_batches: Any = argument(resume=Resume.FROM_HERE_ON)
    limit_test_batches: Any = argument(resume=Resume.FROM_HERE_ON)
    limit_predict_batches: Any = argument(resume=Resume.FROM_HERE_ON)
    overfit_batches: Any = argument()
    val_check_interval: Any = argument(resume=Resume.FROM_HERE_ON)
    check_val_every_n_epoch: int | None = argument(resume=Resume.FROM_HERE_ON)
    num_sanity_val_steps: int | None = argument(resume=Resume.UNSEEN, stack=Stacked.SHARED)
    log_every_n_steps: int | None = argument(resume=Resume.UNSEEN)
    enable_checkpointing: bool | None = argument(resume=Resume.UNSEEN)
    enable_progress_bar: bool | None = argument(resume=Resume.UNSEEN, stack=Stacked.SHARED)
    # the run prints Keras's summary() instead
    enable_model_summary: bool | None = argument(False, resume=Resume.UNSEEN, stack=Stacked.SHARED)
    accumulate_grad_batches: int = argument()
    gradient_clip_val: float | None = argument()
    gradient_clip_algorithm: str | None = argument()  # norm (when a value is given) or value
    deterministic: Any = argument(resume=Resume.UNSEEN)
    benchmark: bool | None = argument(resume=Resume.UNSEEN, stack=Stacked.SHARED)
    inference_mode: bool = argument(resume=Resume.UNSEEN)
    profiler: str | None = argument(resume=Resume.UNSEEN)
    detect_anomaly: bool = argument(resume=Resume.UNSEEN)
    barebones: bool = argument()
    reload_dataloaders_every_n_epochs: int = argument()
    enable_autolog_hparams: bool = argument(resume=Resume.UNSEEN)
    model_registry: str | None = argument(resume=Resume.UNSEEN)

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(
                f"trainer.accelerator={self.accelerator} is not supported; choose one of: {', '.join(ACCELERATORS)}"
            )
        check_devices(self.devices)
        at_least("trainer.num_nodes", self.num_nodes, 1, "trainer.num_nodes=2")
        check_duration("trainer.max_time", self.max_time)
        at_least_or("trainer.max_epochs", self.max_epochs, 1, "trainer.max_epochs=10", None, -1)
        at_least_or("trainer.min_epochs", self.min_epochs, 0, "trainer.min_epochs=3", None)
        at_least_or("trainer.max_steps", self.max_steps, 1, "trainer.max_steps=1000 (or -1: no limit)", -1)
        at_least_or("trainer.min_steps", self.min_steps, 0, "trainer.min_steps=1000", None)
        for low, high in (("min_epochs", "max_epochs"), ("min_steps", "max_steps")):
            least, most = getattr(self, low), getattr(self, high)
            if least is not None and most not in (None, -1) and least > most:
                raise ConfigError(
                    f"trainer.{low}={least} is more than trainer.{high}={most}: lower the first or raise the second"
                )
        check_fraction_or_count("trainer.val_check_interval", self.val_check_interval, "trainer.val_check_interval=0.5")
        every = self.check_val_every_n_epoch
        at_least_or("trainer.check_val_every_n_epoch", every, 1, "trainer.check_val_every_n_epoch=2", None)
        at_least_or(
            "trainer.num_sanity_val_steps", self.num_sanity_val_steps, 0, "trainer.num_sanity_val_steps=2", None, -1
        )
        at_least_or("trainer.log_every_n_steps", self.log_every_n_steps, 0, "trainer.log_every_n_steps=50", None)
        at_least(
            "trainer.reload_dataloaders_every_n_epochs",
            self.reload_dataloaders_every_n_epochs,
            0,
            "trainer.reload_dataloaders_every_n_epochs=1",
        )
        if self.profiler not in PROFILERS:
            raise ConfigError(
                f"trainer.profiler={self.profiler} is not one of Lightning's profilers; choose "
                f"{', '.join(str(name) for name in PROFILERS if name)} (or null)"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"trainer.precision={self.precision} is not supported; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"trainer.strategy={self.strategy} is not supported: mnist_lit spreads a run over devices with "
                f"Lightning's DDP, a whole network on each; choose one of: {', '.join(STRATEGIES)}"
            )
        at_least(
            "trainer.accumulate_grad_batches", self.accumulate_grad_batches, 1, "trainer.accumulate_grad_batches=4"
        )
        if self.gradient_clip_val is not None:
            at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0, "trainer.gradient_clip_val=1.0")
        if self.gradient_clip_algorithm not in (None, "norm", "value"):
            raise ConfigError(
                f"trainer.gradient_clip_algorithm={self.gradient_clip_algorithm} is unknown; choose norm or value"
            )
        for stage in ("train", "val", "test", "predict"):
            check_limit(f"trainer.limit_{stage}_batches", getattr(self, f"limit_{stage}_batches"))
        fast = self.fast_dev_run
        if not isinstance(fast, bool) and not (isinstance(fast, int) and fast >= 1):
            raise ConfigError(f"trainer.fast_dev_run={fast} is neither true/false nor a number of batches ≥ 1")
        check_limit("trainer.overfit_batches", self.overfit_batches)
        if self.overfit_batches is None:
            raise ConfigError(
                "trainer.overfit_batches=None is not a number: give 0 (off), a number of batches or a fraction"
            )
        if self.barebones:
            raise ConfigError(
                "trainer.barebones=true turns off the logging that mnist_lit's history, checkpoints and early stopping "
                "read; leave it false: the engine already runs many mini-batches per Lightning step"
            )
        if self.deterministic not in (None, True, False, "warn"):
            raise ConfigError(f"trainer.deterministic={self.deterministic} is not one of: true, false, warn")


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
    run_name: str | None = None  # None: the run's directory
    tracking_uri: str | None = None
    tags: dict[str, str] | None = None
    log_model: bool = False
    prefix: str = ""


@dataclass
class WandbConfig:
    """logger=wandb: Lightning's WandbLogger (pip install "mnist_lit[wandb]"). Offline unless
    offline=false: each run's files go in <run>/wandb, and `wandb sync <run>/wandb/offline-run-*`
    sends them later (after `wandb login`). One W&B run per run or sweep job, finished as it ends."""

    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: str = "mnist_lit"
    name: str | None = None  # None: the run's directory
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    save_dir: str = "."  # relative to the run's directory
    log_model: bool = False
    prefix: str = ""


@dataclass
class EarlyStoppingConfig:
    """Keras's EarlyStopping: stop once `monitor` has not improved by `min_delta` for `patience`
    epochs; null patience: never. `restore_best_weights` tests (and keeps) the best epoch's weights."""

    patience: int | None = setting(None, stack=Stacked.ALONE, alone="it stops early")
    monitor: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0
    restore_best_weights: bool = False

    def __post_init__(self) -> None:
        if self.patience is not None:
            at_least("early_stopping.patience", self.patience, 0, "early_stopping.patience=3")
        at_least("early_stopping.min_delta", self.min_delta, 0, "early_stopping.min_delta=0.001")
        if self.monitor not in METRICS:
            raise ConfigError(
                f"early_stopping.monitor={self.monitor} is not a metric; choose one of: {', '.join(METRICS)}"
            )
        if self.mode not in ("min", "max"):
            raise ConfigError(f"early_stopping.mode={self.mode} is unknown; choose min (a loss) or max (an accuracy)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    # StackedNetwork computes both of the tutorial's losses, each network its own.
    loss: LossConfig = setting(factory=LossConfig, stack=Stacked.OWN)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = setting(factory=EarlyStoppingConfig, resume=Resume.UNTIL)
    seed: int = setting(0, stack=Stacked.OWN)
    # A run directory or .ckpt file to continue from; with -m, a sweep directory.
    resume: str | None = setting(None, resume=Resume.UNSEEN, stack=Stacked.ALONE, alone="it resumes a run")
    # torch threads: a number, or auto: this run's share of the cores (see runs/machine.py)
    threads: Any = setting("auto", resume=Resume.UNSEEN)
    # The metric whose last epoch's value a run returns: what a sweeper such as Optuna's optimises.
    objective: str = setting("val_accuracy", resume=Resume.UNSEEN)
    # The Optuna trial this job runs, which hydra/sweeper=optuna sets for each of its jobs: the job
    # reports `objective` to it at every epoch's end, and stops where the study prunes it.
    trial: int | None = setting(None, resume=Resume.UNSEEN, stack=Stacked.OWN)
    # A Lightning logger from the logger group (conf/logger), or None: metrics.csv and pictures only.
    logger: Any = setting(None, resume=Resume.UNSEEN, stack=Stacked.ALONE, alone="it sends its metrics to a logger")
    # On a GPU, each execution is recorded once as a CUDA graph and replayed; false: plain eager, for debugging.
    capture: bool = setting(True, resume=Resume.UNSEEN)
    # Who trains: auto, lightning (Lightning's own loop) or fast (common/choices.py ENGINES). Both
    # give the same numbers, so a resume may change it.
    engine: str = setting("auto", resume=Resume.UNSEEN, stack=Stacked.ALONE, alone="it names its engine")


@dataclass
class DataRootConfig:
    """evaluate's data: where the data set lies. The rest (data set, split, batches) is the run's."""

    root: str = MISSING


@dataclass
class EvaluateConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    split: str = "test"  # test, or val: the images that the run's data.val_size held out
    data: DataRootConfig = field(default_factory=DataRootConfig)


@dataclass
class PredictConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    images: str = MISSING  # an image file, a folder of them, or a glob such as 'digits/*.png'


@dataclass
class ExportConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    format: str = "onnx"  # or pt2 (torch.export)


@dataclass
class ServeConfig:
    checkpoint: str = MISSING  # a run directory or a .ckpt file
    port: int = 8000
    host: str = "127.0.0.1"  # this machine alone; 0.0.0.0 serves every network it is on


ConfigStore.instance().store(name="schema", node=Config)
# The logger group's options besides conf/logger/none.yaml, typed.
ConfigStore.instance().store(group="logger", name="tensorboard", node=TensorBoardConfig)
ConfigStore.instance().store(group="logger", name="mlflow", node=MLflowConfig)
ConfigStore.instance().store(group="logger", name="wandb", node=WandbConfig)
ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
ConfigStore.instance().store(name="predict_schema", node=PredictConfig)
ConfigStore.instance().store(name="export_schema", node=ExportConfig)
ConfigStore.instance().store(name="serve_schema", node=ServeConfig)
