"""What a trained network gets wrong: the confusion matrix, the accuracy of each class, and the
test images it got most confidently wrong. torchmetrics counts; matplotlib draws."""

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lit.common import files
from mnist_lit.nn.images import IMAGE_SHAPE
from mnist_lit.reports.pictures import Picture

COLUMNS = 6
SHOWN = COLUMNS * COLUMNS  # most confident mistakes in mistakes.png
_GRAY = colormaps["gray"].with_extremes(bad="white")


@torch.no_grad()
def probabilities(net: nn.Module, images: torch.Tensor, batch: int = 10_000) -> torch.Tensor:
    """Class probabilities of flattened, normalized images, in batches, in the network's own dtype
    (bf16-true trains bfloat16 weights)."""
    dtype = next(net.parameters()).dtype
    return torch.cat([net(chunk.to(dtype)).softmax(-1) for chunk in images.split(batch)]).float()


def write(
    directory: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    names: list[str],
    draw: Callable[[Picture], None] = Picture.write,
) -> dict[str, float]:
    """confusion_matrix.csv and .png and mistakes.png into `directory`; returns each class's accuracy.
    `draw` is given the pictures (a stack gathers its jobs' to draw them together)."""
    images, labels, probs = images.cpu(), labels.cpu(), probs.cpu()
    counts = multiclass_confusion_matrix(probs, labels, len(names))
    rows = counts.tolist()
    with files.atomic_write(directory / "confusion_matrix.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, rows, strict=True))
    draw(Picture(directory / "confusion_matrix.png", confusion_plot, (rows, names)))
    draw(Picture(directory / "mistakes.png", mistakes_plot, worst(images, labels, probs, names)))
    right, total = counts.diag(), counts.sum(1)
    return {name: (r / t).item() if t else float("nan") for name, r, t in zip(names, right, total, strict=True)}


def confusion_plot(counts: list[list[int]], names: list[str], fig: Figure | None = None) -> Figure:
    """The counts, each in its cell (into `fig`, a figure this drew before for the same classes, if
    given)."""
    if fig is None:
        # Margins set by hand: a constrained layout doubles the time to draw it.
        fig = Figure(figsize=(7, 6))
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93)
        ax = fig.add_subplot()
        shown = ax.imshow(np.zeros((len(names), len(names)), dtype=int), cmap="Blues")
        fig.colorbar(shown, ax=ax, label="images")
        ax.set(
            xticks=range(len(names)),
            yticks=range(len(names)),
            xticklabels=names,
            yticklabels=names,
            xlabel="predicted",
            ylabel="true",
            title="Confusion matrix",
        )
        for true in range(len(names)):
            for predicted in range(len(names)):
                ax.text(predicted, true, "", ha="center", va="center", fontsize=7)
    ax = fig.axes[0]
    matrix = np.array(counts)
    (shown,) = ax.images
    shown.set_data(matrix)
    shown.set_clim(matrix.min(), matrix.max())
    dark = matrix.max() / 2
    for text, count in zip(ax.texts, matrix.flat, strict=True):
        text.set_text(f"{count}")
        text.set_color("white" if count > dark else "black")
    return fig


def worst(
    images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, names: list[str]
) -> tuple[np.ndarray, list[str], int]:
    """The wrong answers given with the highest probability, at most SHOWN of them: their images
    (n, 28, 28), each one's title `true 4 → 9 (0.98)`, and how many answers were wrong in all."""
    confidence, predicted = probs.max(-1)
    wrong = (predicted != labels).nonzero().flatten()
    shown = wrong[confidence[wrong].argsort(descending=True)][:SHOWN]
    titles = [f"true {names[labels[i]]} → {names[predicted[i]]} ({confidence[i]:.2f})" for i in shown.tolist()]
    return images[shown].reshape(-1, *IMAGE_SHAPE).float().numpy(), titles, len(wrong)


def mistakes_plot(shown: np.ndarray, titles: list[str], wrong: int, fig: Figure | None = None) -> Figure:
    """The images `worst` chose, each under its title (into `fig`, a figure this drew before, if
    given).

    One mosaic in one axes: 36 axes of their own cost a second to lay out and draw."""
    height, width = IMAGE_SHAPE
    # Each image in a cell with room above it for its title; NaN, drawn white, between them.
    cell_h, cell_w = height + 9, width + 4
    cells = [((n // COLUMNS) * cell_h + 8, (n % COLUMNS) * cell_w + 2) for n in range(SHOWN)]
    mosaic = np.full((COLUMNS * cell_h, COLUMNS * cell_w), np.nan, dtype=np.float32)
    if fig is None:
        fig = Figure(figsize=(9, 10))
        ax = fig.add_axes((0.01, 0.0, 0.98, 0.95))
        ax.set_axis_off()
        for top, left in cells:
            ax.text(left + width / 2, top - 1.5, "", ha="center", va="bottom", fontsize=8)
        ax.imshow(mosaic, cmap=_GRAY, vmin=0, vmax=1, interpolation="nearest")
    ax = fig.axes[0]
    fig.suptitle(f"The {len(shown)} most confident mistakes (of {wrong})", y=0.98)
    for (top, left), image in zip(cells, shown, strict=False):
        mosaic[top : top + height, left : left + width] = image
    for n, text in enumerate(ax.texts):
        text.set_text(titles[n] if n < len(titles) else "")
    ax.images[0].set_data(mosaic)
    return fig
