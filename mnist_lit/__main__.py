"""`python -m mnist_lit [overrides]`, or `mnist-lit [overrides]`: one run, or a sweep with -m.

torch and Lightning are imported only once the config is known to be good, so that --help,
--cfg and a bad override are answered at once."""

import logging
import math
import sys
from pathlib import Path
from typing import cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from mnist_lit.command_line import command_line, ends_in_one_line
from mnist_lit.common.errors import STOPS
from mnist_lit.config.checks import validate
from mnist_lit.lit.internals import command_of_further_ranks
from mnist_lit.startup import heavy_imports
from mnist_lit.sweeps.launchers import validate_launcher
from mnist_lit.sweeps.resume import is_sweep, last_value, resume_job
from mnist_lit.sweeps.summary import record_failure, summarise

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="config")
@ends_in_one_line
def run(cfg: DictConfig) -> float:
    """Returns the `objective` metric's last value, for a sweeper that optimises it (Optuna's);
    NaN for a job of a sweep that failed, which such a sweeper counts as a failed trial."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        validate(cfg)
        with heavy_imports():
            from mnist_lit.runs.train import train

        return _last(train(cfg, output_dir), cfg.objective)
    argv = sys.argv[:]
    try:
        validate(cfg)
        validate_launcher(cfg, hydra_cfg.launcher)
        if cfg.resume and is_sweep(Path(cfg.resume)) and resume_job(output_dir, cfg):
            return last_value(output_dir / "metrics.csv", cfg.objective)
        with heavy_imports():
            from mnist_lit.runs.train import train

        _further_ranks_run_this_job(output_dir)
        return _last(train(cfg, output_dir), cfg.objective)
    except Exception as error:
        record_failure(output_dir, error)
        return math.nan
    except (*STOPS, SystemExit):
        # Ctrl-C or SIGTERM: the sweep stops here, and still says where every job stands.
        summarise(Path(hydra_cfg.sweep.dir), stopped=True)
        raise
    finally:
        sys.argv[:] = argv


def _last(history: dict[str, list[float]], metric: str) -> float:
    """NaN for a run that stopped before its first epoch ended (trainer.max_time)."""
    return history[metric][-1] if history[metric] else math.nan


def _further_ranks_run_this_job(output_dir: Path) -> None:
    """Lightning's DDP starts each further rank by running this command line again with
    hydra.run.dir set to the run's directory. In a sweep that command line is the whole sweep:
    make it this job's own overrides, and the directory this job's."""
    # HydraConfig.get() is typed as the HydraConf dataclass; it returns that config's node.
    hydra_cfg = cast(DictConfig, HydraConfig.get())
    command_of_further_ranks(list(hydra_cfg.overrides.task))
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(output_dir)


main = command_line(run)


if __name__ == "__main__":
    main()
