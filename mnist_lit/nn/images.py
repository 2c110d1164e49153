"""The tutorial's preparation of an image: normalize to [0, 1], flatten to a 784-vector."""

import torch

IMAGE_SHAPE = (28, 28)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] → float32 in [0, 1]."""
    return images.to(torch.float32).div_(255)


def flatten(images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28) → (n, 784)."""
    return images.flatten(1)
