"""hydra/sweeper=optuna: a hyper-parameter search on today's Optuna (≥ 4), through its ask-and-tell
API, that prunes.

It keeps the interface of Hydra's Optuna sweeper (hydra-optuna-sweeper, which requires optuna < 3):
`params` in Hydra's sweep syntax (interval, int, tag(log, ...), choice, range), direction, n_trials,
n_jobs, study_name, storage, max_failure_rate, custom_search_space, the samplers and
optimization_results.yaml. It adds `pruner` (hydra/sweeper/pruner=median, percentile,
threshold, successive_halving or hyperband): each of mnist_lit's jobs reports its objective at every epoch's
end to its trial (mnist_lit/lit/pruning.py), and stops where the study prunes it.

Trials are asked `n_jobs` at a time and the launcher runs each batch: the basic launcher one job
after another, joblib and submitit in parallel, the stacked launcher as one network per depth.
Each batch is chosen knowing only the trials before it."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

JOB = "job"  # a trial's user attribute: the number of the job that runs it
SWEEP = "sweep"  # a trial's user attribute: the sweep directory of that job
INTERRUPTED = "interrupted"  # a trial's user attribute: left running by a stopped sweep


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True  # each trial of a batch is asked knowing the others of it are running


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConf:
    # Its grid is the search space, which the sweeper gives it (_partial_).
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    use_separable_cma: bool = False


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class MOTPESamplerConf:
    _target_: str = "hydra_plugins.mnist_lit_optuna_sweeper.optuna_sweeper.motpe"
    seed: int | None = None


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    # The median pruner is Optuna's percentile pruner at 50: the same settings, and the percentile.
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0


@dataclass
class ThresholdPrunerConf:
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_lit_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING  # none: every trial trains all its epochs
    direction: Any = "minimize"  # or maximize; a list of them for several objectives
    storage: str | None = None  # a database URL; by default optuna.journal in the sweep directory
    study_name: str | None = None  # by default the journal's one study; in a database, the sweep directory
    n_trials: int = 20
    n_jobs: int = 2  # trials asked and launched together
    max_failure_rate: float = 0.0
    params: dict[str, str] | None = None
    custom_search_space: str | None = None  # a function(cfg, trial) that asks for more parameters


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="mnist_lit")
for name, node in {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "grid": GridSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "motpe": MOTPESamplerConf,
}.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mnist_lit")
for name, node in {
    "none": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "threshold": ThresholdPrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="mnist_lit")


def motpe(seed: int | None = None) -> None:
    from mnist_lit.common.errors import ConfigError

    raise ConfigError(
        "hydra/sweeper/sampler=motpe: the 'motpe' sampler was removed in Optuna 4.0; its TPE searches "
        "several objectives itself: hydra/sweeper/sampler=tpe"
    )


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override, as Hydra's Optuna sweeper reads it; a plain
    override's value, as a string, for a fixed parameter."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value: Any = override.value()  # the sweep: its type tells which, as the checks below do
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        # Encoded, as Hydra's Optuna sweeper does: a choice of lists ('[64]') stays a string.
        choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        # As Hydra's Optuna sweeper reads it: from start to stop, both included, by step.
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line} is not a search space Optuna takes")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The distributions to search, and the fixed parameters, of `params` and the command line."""
    from optuna.distributions import BaseDistribution

    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        made = distribution(override)
        key = override.get_key_element()
        if isinstance(made, BaseDistribution):
            distributions[key] = made
            fixed.pop(key, None)
        else:
            fixed[key] = made
            distributions.pop(key, None)
    return distributions, fixed


def grid(distributions: dict[str, Any]) -> dict[str, list[Any]]:
    """The GridSampler's grid: every value of each discrete distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from mnist_lit.common.errors import ConfigError

    values: dict[str, list[Any]] = {}
    for key, made in distributions.items():
        if isinstance(made, CategoricalDistribution):
            values[key] = list(made.choices)
        elif isinstance(made, (IntDistribution, FloatDistribution)) and made.step is not None and not made.log:
            count = round((made.high - made.low) / made.step) + 1
            values[key] = [made.low + i * made.step for i in range(count)]
        else:
            raise ConfigError(f"hydra/sweeper/sampler=grid searches choice() and range() only; {key} is {made}")
    return values


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        pruner: Any,
    ) -> None:
        from mnist_lit.common.errors import ConfigError

        several = isinstance(direction, (list, ListConfig))
        self.directions: list[Any] = [str(d) for d in direction] if several else [str(direction)]
        for bad, why in (
            ([d for d in self.directions if d not in ("minimize", "maximize")], "each must be minimize or maximize"),
            (n_trials < 1 and [f"n_trials={n_trials}"], "it must be ≥ 1"),
            (n_jobs < 1 and [f"n_jobs={n_jobs}"], "it must be ≥ 1"),
            (not 0 <= max_failure_rate <= 1 and [f"max_failure_rate={max_failure_rate}"], "it must be in [0, 1]"),
        ):
            if bad:
                raise ConfigError(f"hydra.sweeper: {', '.join(map(str, bad))} is out of range: {why}")
        self.prunes = type(pruner).__name__ != "NopPruner"
        if self.prunes and len(self.directions) > 1:
            raise ConfigError(
                "hydra.sweeper.pruner prunes a search of one objective; Optuna does not prune several "
                f"(direction has {len(self.directions)}): hydra/sweeper/pruner=none"
            )
        self.sampler, self.pruner = sampler, pruner
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params
        self.extend = instantiate({"_target_": custom_search_space, "_partial_": True}) if custom_search_space else None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra_plugins.mnist_lit_stacked_launcher.stacked_launcher import is_mnist_lit

        self.config: DictConfig = config
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        # Only mnist_lit's jobs know their trial (its `trial` key) and report to it.
        self.reports = is_mnist_lit(config)
        if self.prunes and not self.reports:
            from mnist_lit.common.errors import ConfigError

            raise ConfigError(
                "hydra.sweeper.pruner prunes mnist_lit's jobs, which report each epoch; this app's "
                "report nothing: hydra/sweeper/pruner=none"
            )

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from mnist_lit.sweeps import study as studies

        # Optuna's own line per trial would repeat what the jobs and this sweeper say.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # As Hydra's basic sweeper: the sweep's config, which resume=<sweep dir> recognises it by.
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        given = [f"{key!s}={value!s}" for key, value in (self.params or {}).items()]
        distributions, fixed = search_space([*given, *arguments])
        points = grid(distributions) if _is_grid(self.sampler) else None
        sampler = self.sampler if points is None else self.sampler(points)
        storage = studies.storage(self.storage, sweep_dir)
        study = optuna.create_study(
            study_name=studies.study_name(self.study_name, self.storage, sweep_dir),
            storage=storage,
            sampler=sampler,
            pruner=self.pruner,
            directions=self.directions,
            load_if_exists=True,
        )
        # This sweep's trials: a study in a storage of the user's may hold other sweeps' too, each of
        # which asks for n_trials of its own, as with Hydra's Optuna sweeper.
        self.sweep_dir = str(sweep_dir.resolve())
        left = self._left_running(study, storage)
        trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SWEEP) == self.sweep_dir]
        if trials:
            # A seeded sampler would ask again, in order, for what it asked before the stop.
            study.sampler.reseed_rng()
        done = sum(t.state.is_finished() and not t.user_attrs.get(INTERRUPTED) for t in trials)
        to_go = self.n_trials - done
        if points is not None:
            to_go = min(to_go, math.prod(len(values) for values in points.values()) - done)
        self.job = 1 + max((t.user_attrs.get(JOB, -1) for t in trials), default=-1)
        log.info(
            "Optuna %s: study %s in %s; %s, %s, %d trials to go, %d at a time",
            optuna.__version__,
            study.study_name,
            self.storage or sweep_dir / studies.JOURNAL,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            to_go,
            self.n_jobs,
        )
        # A trial the stopped sweep left running goes on in its own job directory, from its job's
        # last checkpoint (resume=<sweep dir>), as a new trial of the same parameters.
        for params, job in left[: max(to_go, 0)]:
            study.enqueue_trial(params, skip_if_exists=False)
            self._launch(study, [study.ask(distributions)], fixed, job)
            to_go -= 1
        while to_go > 0:
            batch = [study.ask(distributions) for _ in range(min(self.n_jobs, to_go))]
            if self.extend is not None:
                for trial in batch:
                    self.extend(self.config, trial)
            self._launch(study, batch, fixed, self.job)
            self.job += len(batch)
            to_go -= len(batch)
        self._write_results(study, sweep_dir)

    def _launch(self, study: Any, trials: list[Any], fixed: dict[str, str], job: int) -> None:
        """Trials as jobs `job`, `job` + 1, ...; Optuna told how each ended."""
        for i, trial in enumerate(trials):
            trial.set_user_attr(JOB, job + i)
            trial.set_user_attr(SWEEP, self.sweep_dir)
        returns = self.launcher.launch([self._overrides(trial, fixed) for trial in trials], initial_job_idx=job)
        failures = self._tell(study, trials, returns)
        if failures > self.max_failure_rate * len(trials):
            # As Hydra's Optuna sweeper: a job's own exception ends the sweep; a failure that
            # returned a value (mnist_lit's NaN; its error.txt says why) is logged, and the
            # search goes on, as the sweep's summary will say.
            log.error(
                "%d of %d trials failed, more than hydra.sweeper.max_failure_rate=%s allows",
                failures,
                len(trials),
                self.max_failure_rate,
            )
            for ret in returns:
                _ = ret.return_value  # raises a job's own exception, where it raised one

    def _left_running(self, study: Any, storage: Any) -> list[tuple[dict[str, Any], int]]:
        """The parameters and job numbers of the trials a stopped sweep left running: each is
        marked failed, as interrupted, so that it counts neither as done nor as a failure."""
        from optuna.trial import TrialState

        from mnist_lit.sweeps.study import trial_id

        running = [
            trial
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trial.user_attrs.get(SWEEP) == self.sweep_dir
        ]
        for trial in running:
            storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), INTERRUPTED, True)
            _told(study, trial.number, state=TrialState.FAIL)
        if running:
            log.info(
                "Resuming the study: the trials left running (%s) go on in their job directories from their last "
                "checkpoints, each as a new trial of the same parameters",
                ", ".join(str(t.number) for t in running),
            )
        return [(trial.params, trial.user_attrs.get(JOB, trial.number)) for trial in running]

    def _overrides(self, trial: Any, fixed: dict[str, str]) -> list[str]:
        params = {**trial.params, **fixed}
        own = [f"trial={trial.number}"] if self.reports else []
        return [*(f"{key}={value}" for key, value in params.items()), *own]

    def _tell(self, study: Any, trials: list[Any], returns: Sequence[Any]) -> int:
        """Tells Optuna how each trial ended; the number that failed."""
        from optuna.trial import TrialState

        failures = 0
        kept = {kept.number: kept for kept in study.get_trials(deepcopy=False)}
        for trial, ret in zip(trials, returns, strict=True):
            if kept[trial.number].state == TrialState.PRUNED:  # its job said so, as it stopped
                continue
            try:
                value = ret.return_value
                values = [float(v) for v in value] if len(self.directions) > 1 else [float(value)]
            except Exception as error:  # the job's own, raised again by Hydra's JobReturn
                log.warning("Trial %d failed: %s", trial.number, error)
                values = []
            if len(values) != len(self.directions) or not all(map(math.isfinite, values)):
                # mnist_lit's failed job returns NaN: its error.txt says why.
                _told(study, trial, state=TrialState.FAIL)
                failures += 1
            else:
                _told(study, trial, values=values if len(values) > 1 else values[0])
        return failures

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        from mnist_lit.sweeps.study import importances

        results: dict[str, Any] = {"name": "optuna"}
        states = [
            INTERRUPTED if trial.user_attrs.get(INTERRUPTED) else trial.state.name.lower()
            for trial in study.get_trials(deepcopy=False)
        ]
        kinds = [*(state.name.lower() for state in TrialState), INTERRUPTED]
        results["trials"] = {kind: states.count(kind) for kind in kinds if kind in states}
        if "complete" not in states:
            log.warning("No trial completed: %s holds no best trial", sweep_dir / "optimization_results.yaml")
        elif len(self.directions) == 1:
            best = study.best_trial
            results |= {"best_trial": best.number, "best_params": best.params, "best_value": best.value}
            results["importances"] = importances(study)
            log.info("Best trial %d: %s (%s)", best.number, best.params, best.value)
        else:
            results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
            log.info("%d Pareto-optimal trials", len(study.best_trials))
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")


def _told(study: Any, trial: Any, **how: Any) -> None:
    try:
        study.tell(trial, **how)
    except RuntimeError as error:
        # The GridSampler stops the study once it has asked its whole grid, which only Optuna's own
        # optimize() may do: the sweeper asks no more than the grid anyway.
        if "Study.stop" not in str(error):
            raise


def _is_grid(sampler: Any) -> bool:
    import functools

    import optuna

    return isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler
