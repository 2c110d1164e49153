"""History's files: metrics.csv, one row per epoch, and history.png, loss and accuracy per epoch
(exercise 4)."""

import csv
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnist_lit.common import files


def write_csv(history: dict[str, list[float]], path: Path) -> None:
    with files.atomic_write(path) as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        writer.writerows(zip(range(1, len(history["loss"]) + 1), *history.values(), strict=True))


def plot(history: dict[str, list[float]], fig: Figure | None = None) -> Figure:
    """Loss and accuracy per epoch, training and validation side by side (into `fig`, a figure this
    drew before, if given)."""
    if fig is None:
        # Margins set by hand: a constrained layout doubles the time to draw it.
        fig = Figure(figsize=(10, 4))
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
        for ax in epoch_axes(fig, ("loss", "accuracy")):
            ax.plot([], [], "o-", label="train")
            ax.plot([], [], "o-", label="validation")
            ax.legend()
    epochs = range(1, len(history["loss"]) + 1)
    for ax, name in zip(fig.axes, ("loss", "accuracy"), strict=True):
        train, validation = ax.lines
        train.set_data(epochs, history[name])
        validation.set_data(epochs, history[f"val_{name}"])
        ax.relim()
        ax.autoscale_view()
    return fig


def epoch_axes(fig: Figure, names: tuple[str, ...]) -> list[Axes]:
    """One panel per metric, side by side, over whole epochs."""
    axes = fig.subplots(1, len(names))
    for ax, name in zip(axes, names, strict=True):
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return list(axes)
