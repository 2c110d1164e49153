"""`python -m mnist_lit.predict checkpoint=<run dir or .ckpt> images=<file, folder or glob>`:
classify your own digit images, prepared as MNIST was made (nn/digits.py). Prints one line per
image, writes predictions.csv and preview.png (each image as the network saw it)."""

import csv
import glob
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_lit.command_line import command_line, ends_in_one_line
from mnist_lit.common.errors import ConfigError, UserError
from mnist_lit.config.checks import require
from mnist_lit.startup import heavy_imports

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from mnist_lit.runs.trained_network import TrainedNetwork

log = logging.getLogger(__name__)
PREVIEWED = 64  # images shown in preview.png


class Unreadable(UserError):
    """Some images could not be classified; the others were."""


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="predict")
@ends_in_one_line
def run(cfg: DictConfig) -> None:
    require(cfg, checkpoint="run directory or .ckpt file", images="image file, folder or glob")
    with heavy_imports():
        from mnist_lit.runs.trained_network import load

    model = load(cfg.checkpoint)
    rows = predict(model, image_files(cfg.images), Path(HydraConfig.get().runtime.output_dir))
    failed = [row for row in rows if row["error"]]
    if failed:
        raise Unreadable(f"{len(failed)} of {len(rows)} images could not be classified: see predictions.csv")


def image_files(images: str) -> list[Path]:
    """The image files that `images=` names: one file, every image in a folder, or a glob."""
    from PIL import Image

    path = Path(images)
    if path.is_file():
        return [path]
    if path.is_dir():
        extensions = set(Image.registered_extensions())
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
        where = f"the folder {path}"
    elif glob.has_magic(images):
        found = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
        where = f"the pattern {images}"
    else:
        raise ConfigError(f"images={images}: no such file or folder; give a file, a folder of images or a glob")
    if not found:
        raise ConfigError(f"images={images}: {where} holds no image files; give a file, a folder of images or a glob")
    return found


def predict(model: "TrainedNetwork", paths: list[Path], output_dir: Path) -> list[dict[str, Any]]:
    import torch

    from mnist_lit.common import files
    from mnist_lit.nn import digits

    prepared, rows = {}, []
    for file in paths:
        try:
            prepared[file] = digits.prepare(digits.read(file))
        except (digits.NoDigit, OSError, ValueError) as error:  # Pillow: UnidentifiedImageError is an OSError
            rows.append({"file": str(file), "error": str(error).splitlines()[0] or type(error).__name__})
    if prepared:
        probabilities = model.predict(torch.stack(list(prepared.values())))
        top = probabilities.topk(2, dim=-1)
        for file, p, k in zip(prepared, top.values.tolist(), top.indices.tolist(), strict=True):
            rows.append(
                {
                    "file": str(file),
                    "class": model.names[k[0]],
                    "probability": round(p[0], 4),
                    "runner_up": model.names[k[1]],
                    "runner_up_probability": round(p[1], 4),
                    "error": "",
                }
            )
    position = {path: i for i, path in enumerate(paths)}
    rows.sort(key=lambda row: position[Path(row["file"])])
    for row in rows:
        print(
            f"{row['file']}: cannot classify: {row['error']}"
            if row["error"]
            else f"{row['file']}: {row['class']} ({row['probability']:.2f}), "
            f"runner-up {row['runner_up']} ({row['runner_up_probability']:.2f})"
        )
    fields = ["file", "class", "probability", "runner_up", "runner_up_probability", "error"]
    with files.atomic_write(output_dir / "predictions.csv") as f:
        writer = csv.DictWriter(f, fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    if prepared:
        files.figure(output_dir / "preview.png", preview(prepared, {row["file"]: row for row in rows}))
    log.info("Wrote predictions.csv and preview.png to %s", output_dir)
    return rows


def preview(prepared: dict[Path, "torch.Tensor"], rows: dict[str, dict[str, Any]]) -> "Figure":
    """Each image as the network saw it (28×28, ink bright on black), titled with its prediction."""
    from matplotlib.figure import Figure

    from mnist_lit.nn.engine import batches

    shown = list(prepared.items())[:PREVIEWED]
    columns = min(8, len(shown))
    lines = batches(len(shown), columns)
    fig = Figure(figsize=(1.4 * columns, 1.6 * lines), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False).flatten()
    for ax in axes:
        ax.set_axis_off()
    for ax, (file, image) in zip(axes, shown, strict=False):
        row = rows[str(file)]
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{Path(file).name[:14]}\n{row['class']} ({row['probability']:.2f})", fontsize=7)
    return fig


main = command_line(run)

if __name__ == "__main__":
    main()
