"""The classic Keras MNIST tutorial in PyTorch Lightning + Hydra."""

from mnist_lit.train import fit

__all__ = ["fit"]
