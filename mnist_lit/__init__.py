"""The classic Keras MNIST tutorial in PyTorch Lightning + Hydra."""

from mnist_lit import config as _config  # noqa: F401  registers the typed schema that conf/ composes with

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
