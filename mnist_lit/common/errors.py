"""Errors a user can fix, each told in one line that names the fix (command_line.py prints them so)."""


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
