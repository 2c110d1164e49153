"""`python -m mnist_lit.export checkpoint=<run dir or .ckpt> [format=onnx|pt2]`, or `mnist-lit-export`:
the trained network as a file other programs run, with the DataModule's own preparation inside, so
that they feed what MNIST stores, uint8 images (n, 28, 28) for any n, and get class probabilities
(n, 10). `format=onnx` (the default) writes model.onnx through torch's dynamo-based exporter
(pip install "mnist_lit[export]"); `format=pt2` writes model.pt2 through torch.export. The file goes
into the command's own directory, which the log names."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_lit.command_line import command_line, ends_in_one_line
from mnist_lit.common.errors import ConfigError
from mnist_lit.config.checks import require, require_installed
from mnist_lit.startup import heavy_imports

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

ONNX_LIBRARIES = ("onnx", "onnxscript")


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="export")
@ends_in_one_line
def run(cfg: DictConfig) -> None:
    require(cfg, checkpoint="run directory or .ckpt file")
    if cfg.format not in ("onnx", "pt2"):
        raise ConfigError(f"format={cfg.format} is unknown; choose onnx or pt2")
    if cfg.format == "onnx":
        require_installed("format=onnx", ONNX_LIBRARIES, "export", " (or format=pt2, which needs torch alone)")
    with heavy_imports():
        from mnist_lit.nn.exported import FromPixels
        from mnist_lit.runs.trained_network import load

    model = FromPixels(load(cfg.checkpoint).classifier.net).eval()
    path = write(model, cfg.format, Path(HydraConfig.get().runtime.output_dir))
    log.info("Wrote %s: uint8 images (n, 28, 28) in, class probabilities (n, 10) out", path)


def write(model: "nn.Module", format: str, directory: Path) -> Path:
    import torch

    # Two images: a batch of 0 or 1 would be taken for the only size there is.
    example = (torch.zeros(2, 28, 28, dtype=torch.uint8),)
    shapes = {"images": {0: torch.export.Dim("batch")}}
    path = directory / f"model.{format}"
    if format == "pt2":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=shapes), path)
    else:
        torch.onnx.export(
            model,
            example,
            path,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=["images"],
            output_names=["probabilities"],
        )
    return path


main = command_line(run)

if __name__ == "__main__":
    main()
