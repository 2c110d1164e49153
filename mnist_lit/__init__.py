"""The classic Keras MNIST tutorial in PyTorch Lightning + Hydra."""

from hydra.core.plugins import Plugins
from hydra_plugins.mnist_lit_stacked_launcher.stacked_launcher import StackedLauncher

from mnist_lit import config as _config  # noqa: F401  registers the typed schema that conf/ composes with

# Hydra's scan of hydra_plugins misses the stacked launcher in an editable install: register it.
Plugins.instance().register(StackedLauncher)

__all__ = ["fit", "load"]


def __getattr__(name: str):
    # Lazily, so that the command line answers --help and bad overrides without importing torch.
    if name == "fit":
        from mnist_lit.train import fit

        return fit
    if name == "load":
        from mnist_lit.model import load

        return load
    raise AttributeError(f"module 'mnist_lit' has no attribute {name!r}")
