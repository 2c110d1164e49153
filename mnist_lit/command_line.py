"""A Hydra app's command line: the errors a user can fix told in one line each, Hydra's own too."""

import atexit
import dataclasses
import difflib
import functools
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from mnist_lit.common.choices import OWNED_BY_PROJECT
from mnist_lit.common.errors import STOPS, Terminated, UserError, in_package, raised_by, stop_signal, stopped
from mnist_lit.config import directories

T = TypeVar("T")


def explain(error: BaseException) -> str | None:
    """One line for an error the user can fix, or None for anything else (a bug: show its traceback).

    Hydra reports a bad override over several lines, and for a mistyped key suggests adding it
    with `+key=...`, which a typed config then refuses: name the nearest real key instead."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, UserError):
        # A plugin Hydra builds from the config (a sweeper, a sampler) refused its settings.
        return str(error.__cause__)
    frames = traceback.extract_tb(error.__traceback__)
    # Each command line's task function is its module's `run`.
    started = any(f.name == "run" and f.filename.startswith(os.path.dirname(__file__)) for f in frames)
    # An OSError naming a file (not Hydra's MissingConfigException, an OSError too) in Hydra's code.
    in_hydra = any(in_package(f.filename, "hydra") for f in frames)
    if isinstance(error, OSError) and error.filename is not None and not started and in_hydra:
        # Hydra creates the run directory (hydra.run.dir) before the job starts.
        return (
            f"cannot create the run directory {error.filename}: {error.strerror}; "
            "point hydra.run.dir at a directory you can write to"
        )
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        group, _, name = error.missing_cfg_file.rpartition("/")
        plugin = (
            f" (or install Hydra's {name} plugin: pip install hydra-{name}-launcher)"
            if group == "hydra/launcher"
            else ""
        )
        options = ", ".join(f"{group}={option}" for option in error.options)
        return f"{group}={name} is not an option; choose one of: {options}{plugin}"
    if isinstance(error, (ValueError, TypeError)) and not started and raised_by(error, "hydra"):
        # Hydra refuses a group override that is not an option's name (logger=true, model=[1]) with a
        # plain ValueError or TypeError, without saying which override it was.
        return (
            f"Hydra cannot compose the config ({error}): an override of a config group takes one option's name, "
            "e.g. model=mlp, loss=sparse, data=kmnist, logger=tensorboard, experiment=depth"
        )
    if not isinstance(error, ConfigCompositionException):
        return None
    # Hydra raises a merge's error as the context, not the cause, of its own.
    cause = error.__cause__ or error.__context__
    full_key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and full_key.startswith("trainer."):
        name = full_key.removeprefix("trainer.")
        if name in OWNED_BY_PROJECT:
            return f"{cause.full_key} is mnist_lit's to set: {OWNED_BY_PROJECT[name]}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(cause.object_type):
        keys = [f.name for f in dataclasses.fields(cause.object_type) if not f.name.startswith("_")]
        parent = full_key.rpartition(".")[0]
        prefix = f"{parent}." if parent else ""
        close = difflib.get_close_matches(str(cause.key), keys, n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        return (
            f"{cause.full_key} is not a setting: {hint}Settings{' of ' + parent if parent else ''}: {', '.join(keys)}"
        )
    if isinstance(cause, ValidationError):
        override = re.sub(r"^Error merging override ", "", str(error).splitlines()[0])
        return f"{override}: {str(cause.msg).splitlines()[0]}"
    return str(error).splitlines()[0]


# Whether the user asked for full errors (HYDRA_FULL_ERROR=1), as the command line found it.
_tracebacks = [False]


def ends_in_one_line(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """A Hydra task function whose errors a user can fix end the command in their own line. Raised
    through Hydra's job runner, they would come after Hydra's "Error executing job with overrides"
    line; a SystemExit passes it, as Ctrl-C does."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except UserError as error:
            if _tracebacks[0]:
                raise
            raise SystemExit(str(error)) from None

    return run


def command_line(app: Callable[[], Any]) -> Callable[[], None]:
    """A Hydra app's command line, with the errors a user can fix told in one line each, and
    Ctrl-C and SIGTERM too, whenever they come: SIGTERM is raised as Terminated, as Ctrl-C is
    raised as KeyboardInterrupt, for the task to say what it keeps (train.py does); one that
    reaches here says whether the app had done its work.

    Its `main` ends the process when the app is done (see `end_without_teardown`): it is a
    command's entry point, not a function to call from a program that goes on."""

    def main() -> None:
        _tracebacks[0] = os.environ.get("HYDRA_FULL_ERROR") == "1"
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        done = False
        try:
            if _tracebacks[0]:
                app()
            else:
                # Hydra prints its errors over several lines; asked for full errors, it raises them to us.
                os.environ["HYDRA_FULL_ERROR"] = "1"
                try:
                    app()
                except Exception as error:
                    message = explain(error)
                    if message is None:
                        raise
                    sys.exit(message)
            done = True
            end_without_teardown()
        except STOPS as stop:
            how = (
                "after its work was done: its files are complete" if done else "before its work was done: run it again"
            )
            raise stopped(stop_signal(stop), f"Stopped {how}") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            # Hydra's end-of-run callbacks miss a stop: the run's directory is free once its command ends.
            directories.release()

    return main


def _raise_terminated(signum: int, frame: Any) -> None:
    # Lightning's loops call this handler from theirs, and stop at the step's end themselves (and
    # every rank with them): SIGTERM is raised here only where this is the process's own handler.
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        raise Terminated


# Set in each process of a distributed run (by Lightning's launchers or torchrun): their launcher,
# not this process, decides how they end.
_RANK_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE")


def end_without_teardown() -> None:
    """End a command that has done its work as Python would, without Python's teardown.

    Tearing down torch, torchvision and torchmetrics takes over a second after the last line. This
    runs what a normal exit runs that anyone relies on, the atexit handlers (logging's flush and
    close, the loggers' and multiprocessing's own) and the flush of stdout and stderr, then ends with
    status 0. It returns, for the normal exit, when other threads are still running (Python waits for
    them), in a rank of a distributed run, and when torch was never imported (nothing to gain)."""
    if "torch" not in sys.modules or any(name in os.environ for name in _RANK_VARIABLES):
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # one of srun's tasks: srun waits for them all
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    # Missing: a public way to run the atexit handlers; this is what the interpreter's own exit
    # calls (tests/test_internals.py).
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)
