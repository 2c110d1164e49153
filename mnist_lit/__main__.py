"""`python -m mnist_lit [overrides]`, or `mnist-lit [overrides]`: one run, or a sweep with -m.

torch and Lightning are imported only once the config is known to be good, so that --help,
--cfg and a bad override are answered at once."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from mnist_lit.config import validate, validate_launcher
from mnist_lit.errors import command_line
from mnist_lit.sweep import record_failure


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="config")
def run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        validate(cfg)
        from mnist_lit.train import train

        train(cfg, output_dir)
        return
    argv = sys.argv[:]
    try:
        validate(cfg)
        validate_launcher(cfg, hydra_cfg.launcher._target_)
        from mnist_lit.train import train

        _further_ranks_run_this_job(output_dir)
        train(cfg, output_dir)
    except Exception as error:
        record_failure(output_dir, error)
    finally:
        sys.argv[:] = argv


def _further_ranks_run_this_job(output_dir: Path) -> None:
    """Lightning's DDP starts each further rank by running this command line again with
    hydra.run.dir set to the run's directory. In a sweep that command line is the whole sweep:
    make it this job's own overrides, and the directory this job's."""
    hydra_cfg = HydraConfig.get()
    sys.argv[1:] = list(hydra_cfg.overrides.task)
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(output_dir)


main = command_line(run)


if __name__ == "__main__":
    main()
