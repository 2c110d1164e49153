"""The Optuna study of a `hydra/sweeper=optuna` sweep, as the sweeper and its jobs both find it.

The study lives in the sweep directory, in Optuna's JournalStorage on a file (optuna.journal), which
the jobs of any launcher (joblib's processes, submitit's tasks on a shared file system) write at
once through its lock; SQLite is not made for that. A job learns its trial from the config's
`trial` key, which the sweeper sets; the rest (storage, study name, pruner) is the sweeper's config,
which Hydra gives every job."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate

from mnist_lit.common.errors import ConfigError

if TYPE_CHECKING:
    import optuna

JOURNAL = "optuna.journal"


def storage(setting: str | None, sweep_dir: Path) -> "optuna.storages.BaseStorage":
    """`hydra.sweeper.storage`: a database URL, or by default the journal in the sweep directory."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if setting is None:
        return optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    return optuna.storages.get_storage(setting)


def study_name(setting: str | None, storage: str | None, sweep_dir: Path) -> str:
    """`hydra.sweeper.study_name`; by default the journal's one study, or in a database of the
    user's, the sweep directory's: one study a sweep, which its resume continues."""
    return setting or ("search" if storage is None else str(sweep_dir.resolve()))


def job_trial(number: int) -> "optuna.Trial":
    """Trial `number` of this sweep job's study, for the job to report each epoch to and be pruned by."""
    hydra_cfg: Any = HydraConfig.get() if HydraConfig.initialized() else None
    sweeper: Any = hydra_cfg.sweeper if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN else {}
    if str(sweeper.get("_target_", "")).rpartition(".")[2] != "OptunaSweeper":
        raise ConfigError(f"trial={number} is set by hydra/sweeper=optuna for each of its jobs: leave it unset")
    sweep_dir = Path(hydra_cfg.sweep.dir)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the run says when it is pruned
    kept = storage(sweeper.storage, sweep_dir)
    name = study_name(sweeper.study_name, sweeper.storage, sweep_dir)
    study = optuna.load_study(study_name=name, storage=kept, pruner=instantiate(sweeper.pruner))
    return optuna.Trial(study, trial_id(kept, name, number))


def trial_id(storage: "optuna.storages.BaseStorage", study_name: str, number: int) -> int:
    """The storage's id of trial `number`, by the storage's own lookups (BaseStorage's public
    methods): Optuna has no Study.trial(number)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def importances(study: "optuna.Study") -> dict[str, float]:
    """Optuna's parameter importances (fANOVA), where its trials are enough to tell; else none, as
    where the installed Optuna's fANOVA needs scikit-learn (Optuna 4.0), which mnist_lit does not."""
    import optuna

    try:
        return {name: round(value, 4) for name, value in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ImportError):
        return {}
