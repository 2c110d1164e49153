"""Errors a user can fix, each told in one line that names the fix (command_line.py prints them so)."""


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint): the message alone says it."""


class ConfigError(UserError, ValueError):
    """A value out of range or unknown."""


class DataError(UserError, RuntimeError):
    """MNIST is missing, unreadable or damaged."""
