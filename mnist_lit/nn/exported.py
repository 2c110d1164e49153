"""The network as other programs run it: what MNIST stores in, class probabilities out."""

import torch
from torch import nn

from mnist_lit.nn.images import flatten, normalize


class FromPixels(nn.Module):
    """uint8 images (n, 28, 28) → class probabilities (n, 10): the DataModule's own normalize and
    flatten in front of the network, and the softmax that the loss folds in (network.py) behind it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(flatten(normalize(images))).softmax(-1)  # type: ignore[no-any-return]
