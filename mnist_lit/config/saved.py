"""A config saved in a file (a checkpoint's hyper-parameters), read as data: into the typed schema,
checked by the rules a composed config passes, never naming code to call."""

from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.common.choices import MOVED
from mnist_lit.common.errors import ConfigError, first_line
from mnist_lit.config.checks import check, check_targets, entries
from mnist_lit.config.schema import Config


def config_of(saved: Mapping[str, Any], where: str) -> DictConfig:
    """A config saved in a file (a checkpoint's hyper-parameters), read as data: into the typed
    schema, keys added since it was saved taking their defaults, and checked by the rules a composed
    config passes. `where` (e.g. "checkpoint=x.ckpt") begins the one line that refuses it."""
    try:
        _refuse_interpolations(saved)
        saved = _moved(saved)
        check_targets(saved)
        cfg = cast(DictConfig, OmegaConf.merge(OmegaConf.structured(Config), dict(saved)))
        check(cfg)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        raise ConfigError(f"{where}: its config does not fit mnist_lit's ({first_line(error)})") from None
    return cfg


def _moved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """`saved` with the `_target_`s of a checkpoint saved before a class moved named as they are now."""
    moved = {key: dict(value) if isinstance(value, Mapping) else value for key, value in saved.items()}
    for part in moved.values():
        if isinstance(part, dict) and part.get("_target_") in MOVED:
            part["_target_"] = MOVED[part["_target_"]]
    return moved


def _refuse_interpolations(settings: Any) -> None:
    """A saved config holds plain values (it is saved resolved): an ${...} in it would run a resolver."""
    for _, where, _, value in entries(settings):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{where}={value} is an interpolation; a saved config holds plain values only")
