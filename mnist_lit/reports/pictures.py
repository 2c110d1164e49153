"""A picture kept as data until it is drawn: the function that draws it from plain values (lists,
numpy arrays, strings) and the file it goes to. A run draws its own pictures as it goes; a stack's
jobs, dozens of pictures at once, draw theirs in parallel processes, as matplotlib holds the GIL
while it draws (threads take as long as one after another).

A drawing function takes `fig=`, a figure it drew before, and draws the new values into it rather
than setting up another: a stack's pictures of one kind pay matplotlib's set-up once (a figure,
its axes, ticks and texts: a third of a confusion matrix's time)."""

import multiprocessing
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from mnist_lit.common import files


@dataclass(frozen=True)
class Picture:
    path: Path
    draw: Callable[..., Figure]
    values: tuple[Any, ...]

    def write(self) -> None:
        files.figure(self.path, self.draw(*self.values))


def write_all(pictures: Sequence[Picture], processes: int) -> None:
    """Write `pictures`, in up to `processes` processes at once, each drawing its pictures of one
    kind into one figure.

    Forked, on Linux: a child starts at once with matplotlib imported (a spawned one would spend a
    second importing it), and draws from plain values only, never running torch, whose OpenMP
    threads a fork does not copy."""
    kinds: dict[Callable[..., Figure], list[Picture]] = {}
    for picture in pictures:
        kinds.setdefault(picture.draw, []).append(picture)
    processes = max(1, min(processes, max(map(len, kinds.values()), default=1)))
    shares = [share for kind in kinds.values() for i in range(processes) if (share := kind[i::processes])]
    if processes < 2 or sys.platform != "linux":
        for share in shares:
            _write_one_kind(share)
        return
    with warnings.catch_warnings():
        # Python 3.12+ warns that a child forked from a process with threads may deadlock on a
        # lock one of them held; these children take none of torch's or logging's.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            for _ in pool.map(_write_one_kind, shares):
                pass


def _write_one_kind(pictures: list[Picture]) -> None:
    """Pictures that one function draws, each into the figure of the one before."""
    fig = None
    for picture in pictures:
        fig = picture.draw(*picture.values, fig=fig)
        files.figure(picture.path, fig)
