"""The one builder: a config, composed by Hydra or read back from a checkpoint, becomes the
objects that use it: the LightningModule, the DataModule, the Trainer with its callbacks and
loggers, and for a training run (`run`) its share of the machine, for train, evaluate, predict,
`load` and the stacked launcher alike. Nothing below it reads a config."""

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from mnist_lit.common.errors import ConfigError, first_line
from mnist_lit.config.checkpoints import check_resume, read, tell_processes
from mnist_lit.config.checks import lightnings_own, not_fast, plain
from mnist_lit.config.job import command_lines, submitit_job, sweep_job
from mnist_lit.config.saved import config_of
from mnist_lit.config.schema import Taker, TrainerConfig, taken_by
from mnist_lit.lit import console
from mnist_lit.lit.cluster import SubmititEnvironment
from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.lit.fast import FastClassifier, FastDataModule, listeners
from mnist_lit.lit.history import History
from mnist_lit.lit.loggers import set_up_wandb
from mnist_lit.lit.module import Classifier, arguments_of
from mnist_lit.lit.saving import AtomicCheckpointIO, MemberCheckpoints, RunCheckpoint, find, run_checkpoints
from mnist_lit.lit.stack import Member
from mnist_lit.runs import machine
from mnist_lit.sweeps.study import job_trial

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything one training run needs, made from its config in one pass."""

    module: Classifier  # a FastClassifier on the fast engine
    datamodule: MNISTDataModule
    trainer: L.Trainer
    history: History
    timer: Timer
    best: RunCheckpoint  # the best epoch's checkpoint, by early stopping's metric if it is on
    ckpt_path: Path | None  # the checkpoint it resumes
    threads: int  # torch threads per process: the run's share of the cores
    threads_why: str
    ranks: int  # processes that train together (DDP), each with its own batch
    submitit: bool  # a job that submitit started, and requeues


def run(cfg: DictConfig, output_dir: Path, callbacks: Sequence[L.Callback] = ()) -> Run:
    """A training run of `cfg` into `output_dir`; `callbacks` join the run's own (history, timer,
    checkpoints, early stopping, progress bar). Inside a DDP launch, as each rank is."""
    launcher, job_number = sweep_job()
    cfg, submitit = submitit_job(cfg, output_dir, launcher)
    ckpt_path = find(cfg.resume) if cfg.resume else None
    # Lightning's Timer takes a duration's dict form as a plain dict only.
    max_time = cfg.trainer.max_time
    timer = Timer(duration=plain(max_time) if isinstance(max_time, DictConfig) else max_time)
    history = History(output_dir, *command_lines(cfg, output_dir))
    stopping = cfg.early_stopping
    # The best epoch is the one early stopping watches for, if it is on.
    monitor, mode = (stopping.monitor, stopping.mode) if stopping.patience is not None else ("val_accuracy", "max")
    best, last = run_checkpoints(output_dir, monitor, mode)
    checkpoints: list[L.Callback] = [best, last] if cfg.trainer.enable_checkpointing is not False else []
    if stopping.patience is not None:
        early = EarlyStopping(
            monitor, min_delta=stopping.min_delta, patience=stopping.patience, mode=mode, verbose=True
        )
        callbacks = [early, *callbacks]
    if cfg.trial is not None:
        # After the checkpoint callbacks where there are some (PruningAfterCheckpoints).
        checkpoints = [*checkpoints, pruning(cfg, history, bool(checkpoints))]
    bar = console.progress_bar(cfg.trainer.enable_progress_bar)
    # A submitit job: each task is one rank, which submitit started (lit/cluster.py).
    tasks = [SubmititEnvironment()] if submitit else []
    built = trainer(
        cfg,
        devices=machine.devices(cfg.trainer.devices, cfg.trainer.accelerator, launcher, job_number, machine.gpus()),
        default_root_dir=output_dir,
        logger=loggers(cfg, output_dir) or False,
        callbacks=[history, timer, *checkpoints, *bar, *submitit, *callbacks],
        enable_progress_bar=bool(bar),
        plugins=[AtomicCheckpointIO(), *tasks],
    )
    trains = engine(cfg, built)
    L.seed_everything(cfg.seed, verbose=False)
    module = classifier(cfg, trains)
    resumed = check_resume(cfg.resume, cfg, module.net) if ckpt_path else None
    # A process that Slurm or submitit started has a budget of its own (cpus_per_task); ranks that
    # Lightning starts on a CPU share this one's.
    own_budget = tasks or isinstance(getattr(built.strategy, "cluster_environment", None), SLURMEnvironment)
    cpu_processes = built.num_devices if built.strategy.root_device.type == "cpu" and not own_budget else 1
    threads, why = machine.threads(cfg.threads, launcher, cpu_processes)
    # From the devices: world_size is known only once the ranks start, and after ddp_spawn this
    # process knows none.
    ranks = built.num_nodes * built.num_devices
    if resumed and built.is_global_zero:
        tell_processes(resumed, ranks, cfg.data.batch_size)
    data = datamodule(cfg, trains)
    return Run(module, data, built, history, timer, best, ckpt_path, threads, why, ranks, bool(tasks))


def pruning(cfg: DictConfig, history: History, after_checkpoints: bool) -> L.Callback:
    """The callback that reports the job's objective to its Optuna trial (sweeps/study.py)."""
    from mnist_lit.lit.pruning import Pruning, PruningAfterCheckpoints

    trial = job_trial(cfg.trial)
    return (PruningAfterCheckpoints if after_checkpoints else Pruning)(trial, cfg.objective, history.history)


def network(cfg: DictConfig) -> torch.nn.Sequential:
    # _convert_="all": plain lists and dicts, so that checkpoints hold no OmegaConf objects.
    net: torch.nn.Sequential = instantiate(cfg.model, _convert_="all")
    return net


def optimizer(cfg: DictConfig) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer, waiting for its parameters (Hydra's _partial_)."""
    made: Callable[..., torch.optim.Optimizer] = instantiate(cfg.optimizer, _convert_="all")
    return made


def member(cfg: DictConfig, output_dir: Path, label: str) -> Member:
    """A stacked job's network, from its own seed as its run's would be, and what its run keeps."""
    L.seed_everything(cfg.seed, verbose=False)
    history = History(output_dir, label=label)
    checkpoints = MemberCheckpoints(output_dir)
    trial = job_trial(cfg.trial) if cfg.trial is not None else None
    made = Member(network(cfg), cfg.data.seed, plain(cfg), history, checkpoints, lr=cfg.optimizer.lr)
    made.trial, made.objective = trial, cfg.objective
    return made


def stack_trainer(cfg: DictConfig) -> tuple[L.Trainer, Timer]:
    """The Trainer of a stack of jobs like `cfg` (stacking.why_alone let only settings it honours
    through), on one device, writing each job's checkpoints itself (lit/stack.py); and its Timer."""
    timer = Timer()
    made = trainer(
        cfg,
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
        plugins=[AtomicCheckpointIO()],
    )
    return made, timer


def engine(cfg: DictConfig, trainer: L.Trainer) -> str:
    """The engine that trains `cfg` with `trainer`: engine=auto takes the fast one unless the run
    asks for what only Lightning's loop does, and says why; engine=fast refuses such a run."""
    if cfg.engine == "lightning":
        return "lightning"
    asked = list(dict.fromkeys([*lightnings_own(cfg), *listeners(trainer)]))
    if not asked:
        return "fast"
    if cfg.engine == "fast":
        raise not_fast(asked)
    log.info("Lightning's loop trains this run (engine=lightning): the fast engine does not do %s", ", ".join(asked))
    return "lightning"


def classifier(cfg: DictConfig, engine: str = "lightning") -> Classifier:
    """The LightningModule of the config's network, loss and optimizer, for `engine` to train."""
    arguments = arguments_of(plain(cfg))
    module = FastClassifier(**arguments, capture=cfg.capture) if engine == "fast" else Classifier(**arguments)
    # History sends each epoch's metrics to the run's loggers, whichever engine trains.
    module.logs_epochs = False
    # Its checkpoints hold the run's whole config, in place of its arguments: resume, evaluate and
    # the sweeps read it (save_hyperparameters adds to what is saved).
    module.hparams.clear()
    module.save_hyperparameters(plain(cfg))
    return module


def datamodule(cfg: DictConfig, engine: str) -> MNISTDataModule:
    """The config's data for `engine`: Lightning's loop trains on mini-batches."""
    if engine == "fast":
        return fast_datamodule(cfg)
    settings = {key: value for key, value in plain(cfg.data).items() if key != "steps_per_execution"}
    made: MNISTDataModule = instantiate(settings)
    return made


def fast_datamodule(cfg: DictConfig) -> FastDataModule:
    """The config's data for the fast engine: training batches are executions of
    data.steps_per_execution mini-batches, and evaluation reads as many images at once."""
    made: FastDataModule = instantiate(cfg.data, _target_=f"{FastDataModule.__module__}.FastDataModule")
    return made


def trainer(cfg: DictConfig, **arguments: Any) -> L.Trainer:
    """The config's Trainer; `arguments` add to or replace its settings."""
    lightnings = ("_target_", *taken_by(Taker.LIGHTNING))
    settings = OmegaConf.masked_copy(cfg.trainer, [str(k) for k in cfg.trainer if k in lightnings])
    try:
        made: L.Trainer = instantiate(settings, **{"logger": False, **arguments})
    except InstantiationException as error:
        if not isinstance(error.__cause__, (MisconfigurationException, ValueError)):
            raise
        raise refused(cfg, error.__cause__) from None
    return made


def refused(cfg: DictConfig, refusal: BaseException) -> ConfigError:
    """Lightning's refusal of the run's settings in one line: the trainer settings this run changed,
    and Lightning's own reason."""
    return ConfigError(f"Lightning's Trainer refuses {_changed(cfg.trainer)}: {first_line(refusal)}")


def _changed(trainer: DictConfig) -> str:
    """The trainer settings that differ from the typed config's defaults, as overrides."""
    defaults = OmegaConf.structured(TrainerConfig)
    keys = [str(key) for key in trainer if key != "_target_"]
    changed = [f"trainer.{key}={trainer[key]}" for key in keys if trainer[key] != defaults[key]]
    return " ".join(changed) if changed else "the default trainer settings"


def loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    """The config's logger, writing inside the run's directory unless it names a tracking server."""
    if not cfg.get("logger"):
        return []
    run = Path(output_dir).resolve()
    where: dict[str, Any] = {}
    if "save_dir" in cfg.logger:
        where["save_dir"] = str(run / cfg.logger.save_dir)
    if "tracking_uri" in cfg.logger and cfg.logger.tracking_uri is None:
        # MLflow's own advice: a database, not its file store (which it refuses since 3.x).
        where |= {"tracking_uri": f"sqlite:///{run}/mlflow.db", "artifact_location": str(run / "mlartifacts")}
    if "run_name" in cfg.logger and cfg.logger.run_name is None:
        where["run_name"] = os.path.relpath(run)
    if cfg.logger._target_.endswith("WandbLogger"):
        where["settings"] = set_up_wandb(cfg.logger.offline)
        if cfg.logger.name is None:
            where["name"] = os.path.relpath(run)
    return [instantiate(cfg.logger, **where, _convert_="all")]


def restore(
    path: str | Path,
    key: str = "checkpoint",
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> Classifier:
    """The trained Classifier of a run directory or .ckpt file, rebuilt from the project's own
    choices as the checkpoint's config names them (checkpoint.read checks it); `overrides`
    replace top-level keys of that config, checked by the same rules."""
    checkpoint = read(path, key, map_location)
    cfg = checkpoint["config"]
    if overrides:
        cfg = config_of({**checkpoint["hyper_parameters"], **overrides}, f"{key}={path}")
    made = classifier(cfg)
    made.load_state_dict(checkpoint["state_dict"], strict=strict)
    return made.eval()
