"""The resolvers that make a run's or a sweep's directory (conf/config.yaml's hydra.run.dir and
hydra.sweep.dir): a new one each time, so that nothing a run wrote is written over; and the lock
that keeps a directory to one run (or sweep) at a time, when one is given twice."""

import itertools
import os
import socket
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_lit.common import files
from mnist_lit.common.errors import UserError

LOCK = ".lock"  # in the run's or the sweep's directory; it names the process that holds it

_held: dict[Path, FileLock] = {}


class InUse(UserError):
    """Another run, or sweep, is writing into the directory."""


def claim(directory: str | Path, setting: str) -> None:
    """Lock `directory` for this process's run until `release`, or until the process ends, however
    it ends (the operating system's lock): a second run or resume into it is refused in one line.
    Its test write, the lock's owner, also finds a full disk or an unwritable directory before any
    file of the run is written. `setting` names what chooses the directory, for the fix."""
    if _rank() != 0:  # the other processes of a distributed run write into rank 0's directory
        return
    path = files.directory(directory).resolve()
    lock = FileLock(path / LOCK, timeout=0)
    try:
        lock.acquire()
        with open(path / LOCK, "w") as owner:
            owner.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    except Timeout:
        holder = (path / LOCK).read_text().strip() or "another process"
        raise InUse(
            f"{path} is in use by another run ({holder}): wait for it to end, or give this one another {setting}"
        ) from None
    except OSError as error:
        if lock.is_locked:  # a full disk took the lock file but not its owner: leave no empty file
            (path / LOCK).unlink(missing_ok=True)
            lock.release()
        raise files.WriteError(
            f"cannot write in {path}: {error.strerror or error}; {files.fix(error, setting)}"
        ) from None
    _held[path] = lock


def _rank() -> int:
    """This process's rank in a distributed run, from the variables that Lightning's rank_zero_only
    reads (importing Lightning here would cost every command line a second before a bad override
    is answered)."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def release(directory: str | Path | None = None) -> None:
    """Unlock `directory`, or every directory this process locked."""
    for path in [Path(directory).resolve()] if directory is not None else list(_held):
        if path in _held:
            _held.pop(path).release()


class Claim(Callback):
    """Hydra's side of `claim`: the run's or the sweep's directory, locked before Hydra writes its
    config there. Hydra turns a callback's exceptions into warnings: a refusal ends here, in one line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config.hydra.sweep.dir, "hydra.sweep.dir")

    def _claim(self, directory: str, setting: str) -> None:
        try:
            claim(directory, setting)
        except UserError as error:
            sys.exit(str(error))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.run.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.sweep.dir)


def unique_dir(path: str) -> str:
    """Create `path`, or `path-1`, `path-2`, ... if taken, and return it: two runs started in the
    same second get two directories, and nothing a run wrote is written over."""
    base = Path(path)
    files.directory(base.parent)
    for n in itertools.count():
        candidate = base.with_name(f"{base.name}-{n}") if n else base
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError:
            files.directory(candidate)  # says why, in one line
        return str(candidate)
    raise AssertionError("unreachable")


def sweep_dir(resume: str | None, path: str) -> str:
    """A sweep's directory: the one `resume=` names when it is a sweep's (its jobs go on where
    they were), else a new one."""
    if resume and (Path(resume) / "multirun.yaml").is_file():
        return resume
    return unique_dir(path)


# Cached per composed config, so each run creates its directory exactly once.
OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sweep_dir", sweep_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("data_root", files.data_root, replace=True)
