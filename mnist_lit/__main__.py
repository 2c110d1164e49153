"""`python -m mnist_lit [overrides]`, or `mnist-lit [overrides]`: one run, or a sweep with -m."""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_lit.errors import explain
from mnist_lit.sweep import record_failure
from mnist_lit.train import train


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="config")
def run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        train(cfg, output_dir)
    except Exception as error:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        record_failure(output_dir, error)


def main() -> None:
    """Hydra's command line, with the errors a user can fix told in one line each."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return run()
    # Hydra prints its errors over several lines; asked for full errors, it raises them to us.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except Exception as error:
        message = explain(error)
        if message is None:
            raise
        sys.exit(message)


if __name__ == "__main__":
    main()
