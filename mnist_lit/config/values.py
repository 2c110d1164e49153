"""Checks of single values that the typed config runs as it is built (its __post_init__): each
refuses in one line that names the key and a good value."""

import math
import re
from typing import Any

from mnist_lit.common.errors import ConfigError


def at_least(key: str, value: int | float, low: int | float, example: str) -> None:
    """`value` ≥ `low`, and finite (NaN compares false, inf would mean nothing)."""
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} is out of range: it must be a finite number ≥ {low}, e.g. {example}")
    if value < low:
        raise ConfigError(f"{key}={value} is out of range: it must be ≥ {low}, e.g. {example}")


def at_least_or(key: str, value: int | float | None, low: int, example: str, *special: int | None) -> None:
    """As `at_least`, but also `special` values (None: Lightning's default, -1: no limit, ...)."""
    if value not in special:
        assert value is not None
        at_least(key, value, low, example)


def check_devices(devices: Any) -> None:
    """Lightning's forms: a number of devices (-1: every GPU), auto, or GPU indices as a list or "0,1"."""
    fine = (
        devices == "auto"
        or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
        or (isinstance(devices, str) and re.fullmatch(r"\d+(,\d+)*,?", devices.strip()) is not None)
        or (
            isinstance(devices, list)
            and devices
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
        )
    )
    if not fine:
        raise ConfigError(
            f"trainer.devices={devices} is not a number of devices: give one ≥ 1 (e.g. trainer.devices=2), -1 for "
            "every GPU, a list of GPU indices (trainer.devices=[0,1]) or auto"
        )


# timedelta's keywords: Lightning's Timer takes a dict of them too.
_DURATION_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def check_duration(key: str, duration: Any) -> None:
    """Lightning's forms of a duration: "DD:HH:MM:SS", or a dict such as {hours: 1}."""
    if duration is None:
        return
    if isinstance(duration, str) and re.fullmatch(r"\d+:\d+:\d+:\d+", duration.strip()):
        return
    if (
        isinstance(duration, dict)
        and duration
        and set(duration) <= set(_DURATION_KEYS)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in duration.values())
    ):
        return
    raise ConfigError(
        f"{key}={duration} is not a duration: give days:hours:minutes:seconds, e.g. {key}=00:01:30:00, or "
        f"{key}={{hours:1}}"
    )


def check_fraction_or_count(key: str, value: Any, example: str) -> None:
    """Lightning's val_check_interval: a fraction of an epoch in (0, 1], or a number of mini-batches ≥ 1."""
    if value is None:
        return
    if isinstance(value, float) and 0 < value <= 1:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    raise ConfigError(
        f"{key}={value} is out of range: give a fraction of an epoch in (0, 1], or a number of mini-batches ≥ 1, "
        f"e.g. {example}"
    )


def check_limit(key: str, limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, float) and not 0 <= limit <= 1:
        raise ConfigError(
            f"{key}={limit} is out of range: a fraction is between 0.0 and 1.0; a number of mini-batches is an integer"
        )
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ConfigError(
            f"{key}={limit} is not a limit: give a number of mini-batches, e.g. {key}=10, or a fraction, e.g. 0.25"
        )
