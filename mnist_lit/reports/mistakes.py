"""What a trained network gets wrong: the confusion matrix, the accuracy of each class, and the
test images it got most confidently wrong. torchmetrics counts; matplotlib draws."""

import csv
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lit.common import files
from mnist_lit.nn.images import IMAGE_SHAPE

COLUMNS = 6
SHOWN = COLUMNS * COLUMNS  # most confident mistakes in mistakes.png
_GRAY = colormaps["gray"].with_extremes(bad="white")


@torch.no_grad()
def probabilities(net: nn.Module, images: torch.Tensor, batch: int = 10_000) -> torch.Tensor:
    """Class probabilities of flattened, normalized images, in batches."""
    return torch.cat([net(chunk).softmax(-1) for chunk in images.split(batch)]).float()


def write(
    directory: Path, images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, names: list[str]
) -> dict[str, float]:
    """confusion_matrix.csv and .png and mistakes.png into `directory`; returns each class's accuracy."""
    images, labels, probs = images.cpu(), labels.cpu(), probs.cpu()
    counts = multiclass_confusion_matrix(probs, labels, len(names))
    with files.atomic_write(directory / "confusion_matrix.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, counts.tolist(), strict=True))
    files.figure(directory / "confusion_matrix.png", confusion_plot(counts, names))
    files.figure(directory / "mistakes.png", mistakes_plot(images, labels, probs, names))
    right, total = counts.diag(), counts.sum(1)
    return {name: (r / t).item() if t else float("nan") for name, r, t in zip(names, right, total, strict=True)}


def confusion_plot(counts: torch.Tensor, names: list[str]) -> Figure:
    # Margins set by hand: a constrained layout doubles the time to draw it.
    fig = Figure(figsize=(7, 6))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93)
    ax = fig.subplots()
    shown = ax.imshow(counts.numpy(), cmap="Blues")
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
    dark = counts.max().item() / 2
    for (true, predicted), count in zip(
        torch.cartesian_prod(*(torch.arange(len(names)),) * 2).tolist(), counts.flatten().tolist(), strict=True
    ):
        ax.text(
            predicted,
            true,
            f"{count}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > dark else "black",
        )
    return fig


def mistakes_plot(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, names: list[str]) -> Figure:
    """The wrong answers given with the highest probability, each titled `true 4 → 9 (0.98)`.

    One mosaic in one axes: 36 axes of their own cost a second to lay out and draw."""
    confidence, predicted = probs.max(-1)
    wrong = (predicted != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:SHOWN]
    height, width = IMAGE_SHAPE
    # Each image in a cell with room above it for its title; NaN, drawn white, between them.
    cell_h, cell_w = height + 9, width + 4
    mosaic = torch.full((COLUMNS * cell_h, COLUMNS * cell_w), float("nan"))
    fig = Figure(figsize=(9, 10))
    ax = fig.add_axes((0.01, 0.0, 0.98, 0.95))
    ax.set_axis_off()
    fig.suptitle(f"The {len(worst)} most confident mistakes (of {len(wrong)})", y=0.98)
    for n, i in enumerate(worst.tolist()):
        top, left = (n // COLUMNS) * cell_h + 8, (n % COLUMNS) * cell_w + 2
        mosaic[top : top + height, left : left + width] = images[i].reshape(IMAGE_SHAPE)
        title = f"true {names[labels[i]]} → {names[predicted[i]]} ({confidence[i]:.2f})"
        ax.text(left + width / 2, top - 1.5, title, ha="center", va="bottom", fontsize=8)
    ax.imshow(mosaic.numpy(), cmap=_GRAY, vmin=0, vmax=1, interpolation="nearest")
    return fig
