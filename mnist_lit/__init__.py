"""The classic Keras MNIST tutorial in PyTorch Lightning + Hydra.

from mnist_lit import fit, load, Classifier, MNISTDataModule
"""

from typing import Any

__all__ = ["fit", "load", "Classifier", "MNISTDataModule"]


def __getattr__(name: str) -> Any:
    # Lazily: importing a part (mnist_lit.nn, mnist_lit.lit) loads only what that part needs, and
    # the command line answers --help and bad overrides without importing torch.
    if name == "fit":
        from mnist_lit.runs.train import fit

        return fit
    if name == "load":
        from mnist_lit.runs.trained_network import load

        return load
    if name == "Classifier":
        from mnist_lit.lit.module import Classifier

        return Classifier
    if name == "MNISTDataModule":
        from mnist_lit.lit.data import MNISTDataModule

        return MNISTDataModule
    raise AttributeError(f"module 'mnist_lit' has no attribute {name!r}")
