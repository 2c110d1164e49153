"""`python -m mnist_lit [overrides]`, or `mnist-lit [overrides]`: one run, or a sweep with -m."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_lit.train import train


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
