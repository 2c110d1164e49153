"""`python -m mnist_lit [overrides]`, or `mnist-lit [overrides]`: one run, or a sweep with -m."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_lit.sweep import record_failure
from mnist_lit.train import train


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        train(cfg, output_dir)
    except Exception as error:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        record_failure(output_dir, error)


if __name__ == "__main__":
    main()
