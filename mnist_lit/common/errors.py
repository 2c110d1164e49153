"""Errors a user can fix, each told in one line that names the fix (command_line.py prints them so),
and the stops a user makes: Ctrl-C and SIGTERM."""

import os
import signal
import sys
import traceback


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint): the message alone says it."""


class ConfigError(UserError, ValueError):
    """A value out of range or unknown."""


class DataError(UserError, RuntimeError):
    """MNIST is missing, unreadable or damaged."""


def first_line(error: BaseException) -> str:
    """An error's message cut to its first line, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, as Python raises KeyboardInterrupt for Ctrl-C
    (command_line.py installs the handler): not an Exception, so that nothing takes it for an error."""


STOPS = (KeyboardInterrupt, Terminated)


def stop_signal(stop: BaseException) -> signal.Signals:
    """The signal behind a stop: SIGINT for Ctrl-C's KeyboardInterrupt, else SIGTERM (Terminated,
    or Lightning's own SIGTERMException)."""
    return signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM


def stopped(by: signal.Signals, line: str) -> SystemExit:
    """The end of a process stopped by `by`: `line` ("Stopped ..."), on stderr, says what is kept
    and how to go on, and the exit status is the shell's, 128 + the signal (130 for Ctrl-C, 143 for
    SIGTERM)."""
    print(line, file=sys.stderr, flush=True)
    return SystemExit(128 + by)


def raised_by(error: BaseException, *package: str) -> bool:
    """Whether `error` was raised by the code of `package` (e.g. "lightning", "pytorch"): its
    traceback's innermost frame lies in that package's directory."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and in_package(frames[-1].filename, *package)


def in_package(filename: str, *package: str) -> bool:
    return os.path.join("", *package, "") in filename
