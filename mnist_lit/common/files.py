"""The files a run writes, whole or not at all: each is written beside its target, flushed to
disk and renamed into place, so a killed run or a full disk never leaves half a file nor spoils
the last good one. A write that fails stops the run with one line naming the file, the reason and
the fix."""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mnist_lit.common.errors import STOPS, UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class WriteError(UserError):
    """A file of the run could not be written."""


def data_root() -> str:
    """Where the data sets lie unless a run says otherwise: $MNIST_LIT_DATA if set, else one per-user
    cache shared by runs from any directory."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ.get("HOME") or str(Path.home()), ".cache")
    return os.environ.get("MNIST_LIT_DATA") or os.path.join(cache, "mnist_lit")


def fix(error: OSError, setting: str = "hydra.run.dir (fit's output_dir)") -> str:
    """What to do about `error`, writing where `setting` points."""
    if error.errno == errno.ENOSPC:
        return f"free space on that disk, or point {setting} at another one"
    return f"point {setting} at a directory you can write to"


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open `path` for writing; it appears only once everything is written."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, mode, newline=None if "b" in mode else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException as failure:
        partial.unlink(missing_ok=True)
        # Ctrl-C or SIGTERM inside torch.save reaches here as the RuntimeError its zip writer
        # raises on closing a half-written file: the stop is what happened.
        stop = _behind(failure, STOPS)
        if stop is not None and stop is not failure:
            raise stop from None
        error = _behind(failure, OSError)
        if error is None or not isinstance(failure, (OSError, RuntimeError)):
            raise
        raise WriteError(f"cannot write {path}: {error.strerror or error}; {fix(error)}") from failure


def _behind(error: BaseException | None, kinds: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    """The exception of `kinds` behind `error`, or None: torch.save reports a full disk as a
    RuntimeError of its zip writer, with the OSError as its cause or context."""
    while error is not None and not isinstance(error, kinds):
        error = error.__cause__ or error.__context__
    return error


def text(path: str | Path, content: str) -> None:
    with atomic_write(path) as f:
        f.write(content)


def figure(path: str | Path, fig: "Figure") -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


def directory(path: str | Path) -> Path:
    """Create the run's directory before any data is read, or say in one line why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the run directory {path}: {error.strerror or error}; {fix(error)}") from error
    return path
