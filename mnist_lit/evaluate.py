"""`python -m mnist_lit.evaluate checkpoint=<run dir or .ckpt> [split=val] [data.root=...]`: the
checkpoint's network, rebuilt from the checkpoint alone, on the test images (or the images its
run held out with data.val_size), with the same pictures as a training run, in a new directory."""

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_lit.command_line import command_line, ends_in_one_line
from mnist_lit.common.errors import ConfigError
from mnist_lit.config.checks import require
from mnist_lit.startup import heavy_imports

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="evaluate")
@ends_in_one_line
def run(cfg: DictConfig) -> None:
    require(cfg, checkpoint="run directory or .ckpt file")
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split={cfg.split} is not a split; choose split=test or split=val")
    evaluate(cfg.checkpoint, cfg.split, cfg.data.root, Path(HydraConfig.get().runtime.output_dir))


def evaluate(checkpoint: str, split: str, root: str, output_dir: Path) -> dict[str, Any]:
    with heavy_imports():
        from mnist_lit.common import files
        from mnist_lit.config.saved import config_of
        from mnist_lit.lit import console
        from mnist_lit.reports import mistakes
        from mnist_lit.runs import build

    # As quiet as a run: none of Lightning's notices a user cannot act on, each of its messages once.
    with console.quiet():
        module = build.restore(checkpoint)
        cfg = config_of(module.hparams, f"checkpoint={checkpoint}")
        cfg.data.root = root
        # The fast engine's data: evaluation reads a whole execution's images at once.
        datamodule = build.fast_datamodule(cfg)
        # One device, wherever the run trained: the numbers do not depend on it. Whole splits, whatever
        # limits the run trained with.
        trainer = build.trainer(
            cfg,
            accelerator="auto",
            devices=1,
            strategy="auto",
            fast_dev_run=False,
            # None: Lightning's own whole split, which it takes without a message about it.
            limit_val_batches=None,
            limit_test_batches=None,
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=output_dir,
        )
        measure = trainer.validate if split == "val" else trainer.test
        measure(module, datamodule=datamodule, verbose=False)
        prefix = "val_" if split == "val" else "test_"
        metrics = {name: value.item() for name, value in trainer.callback_metrics.items() if name.startswith(prefix)}
        images, labels = (datamodule.val if split == "val" else datamodule.test).tensors
        probabilities = mistakes.probabilities(module.net.to(images.device), images)
        results = {
            "checkpoint": str(checkpoint),
            "split": split,
            "images": len(labels),
            f"{prefix}loss": metrics[f"{prefix}loss"],
            f"{prefix}accuracy": metrics[f"{prefix}accuracy"],
            "per_class_accuracy": mistakes.write(output_dir, images, labels, probabilities, datamodule.names),
        }
        files.text(output_dir / "results.json", json.dumps(results, indent=2) + "\n")
        log.info(
            "%s: %d images - loss: %.4f - accuracy: %.4f",
            split,
            len(labels),
            results[f"{prefix}loss"],
            results[f"{prefix}accuracy"],
        )
        log.info("Wrote results.json, confusion_matrix.csv/.png and mistakes.png to %s", output_dir)
        return results


main = command_line(run)

if __name__ == "__main__":
    main()
