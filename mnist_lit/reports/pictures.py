"""A picture kept as data until it is drawn: the function that draws it from plain values (lists,
numpy arrays, strings) and the file it goes to. A run draws its own pictures as it goes; a stack's
jobs, dozens of pictures at once, draw theirs in parallel processes, as matplotlib holds the GIL
while it draws (threads take as long as one after another)."""

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
    """Write `pictures`, in up to `processes` processes at once.

    Forked, on Linux: a child starts at once with matplotlib imported (a spawned one would spend a
    second importing it), and draws from plain values only, never running torch, whose OpenMP
    threads a fork does not copy."""
    processes = min(processes, len(pictures))
    if processes < 2 or sys.platform != "linux":
        for picture in pictures:
            picture.write()
        return
    with warnings.catch_warnings():
        # Python 3.12+ warns that a child forked from a process with threads may deadlock on a
        # lock one of them held; these children take none of torch's or logging's.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            for _ in pool.map(Picture.write, pictures):
                pass
