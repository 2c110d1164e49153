"""A trained network, ready to use from a notebook:

model = mnist_lit.load("outputs/2026-11-26/10-00-00")      # a run directory or a .ckpt file
model.predict(["seven.png", "two.jpg"])                      # (2, 10) class probabilities
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mnist_lit.lit.data import names
from mnist_lit.lit.module import Classifier
from mnist_lit.nn import digits
from mnist_lit.nn.images import IMAGE_SHAPE, flatten, normalize
from mnist_lit.reports.mistakes import probabilities
from mnist_lit.runs import build

Digits = str | Path | Image.Image | np.ndarray | torch.Tensor | Iterable[Any]


class TrainedNetwork:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier.eval()
        self.names = names(classifier.hparams["data"]["dataset"])

    def predict(self, x: Digits) -> torch.Tensor:
        """Class probabilities, one row per digit. `x`: file paths or PIL images (prepared as
        MNIST was made, see nn/digits.py), a list of them, or an array or tensor of MNIST-like
        images of shape (28, 28), (n, 28, 28) or (n, 784): uint8 in [0, 255] or floats in [0, 1]."""
        return probabilities(self.classifier.net, self.inputs(x))

    @staticmethod
    def inputs(x: Digits) -> torch.Tensor:
        """`x` as the network takes it: (n, 784) floats in [0, 1]."""
        if isinstance(x, (str, Path, Image.Image)):
            x = [x]
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            x = torch.stack(
                [digits.prepare(digits.read(item) if isinstance(item, (str, Path)) else item) for item in x]
            )
        x = torch.as_tensor(x)
        if x.shape == IMAGE_SHAPE:
            x = x[None]
        if x.dtype == torch.uint8:
            x = normalize(x)
        if x.shape[1:] not in (IMAGE_SHAPE, (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],)):
            raise ValueError(f"images of shape {tuple(x.shape)}: give (28, 28), (n, 28, 28) or (n, 784)")
        return flatten(x.float())


def load(path: str | Path) -> TrainedNetwork:
    """The trained network of a run directory (its last checkpoint) or of a .ckpt file."""
    return TrainedNetwork(build.restore(path))
