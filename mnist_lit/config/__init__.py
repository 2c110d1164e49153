"""The typed configuration that conf/ composes with, and every check a config passes before any
work starts, whether Hydra composed it or a checkpoint holds it.

Importing it registers what conf/ needs with Hydra and OmegaConf: the typed schema (in Hydra's
ConfigStore) and the resolvers that make run directories. Every Hydra entry point imports it."""

from mnist_lit.config import directories as _directories  # noqa: F401
from mnist_lit.config import schema as _schema  # noqa: F401
