"""Digits from the real world, prepared the way MNIST itself was made: grey, ink bright on black,
cropped to the ink, scaled to fit 20×20 keeping the aspect ratio, and placed in 28×28 with the
ink's centre of mass at the centre. Pillow reads and scales; torch does the arithmetic."""

from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_lit.nn.images import IMAGE_SHAPE

FIT = 20  # MNIST's digits fit a 20×20 box inside the 28×28 image
INK = 0.25  # a pixel is ink when it is this bright against the brightest, after the paper is removed


class NoDigit(ValueError):
    """The image holds nothing that looks like ink."""


def read(path: str | Path | IO[bytes]) -> Image.Image:
    """An image file (or its bytes in a file object) as Pillow reads it: any format, the first frame
    of an animation."""
    with Image.open(path) as image:
        image.seek(0)
        return ImageOps.exif_transpose(image).copy()


def prepare(image: Image.Image) -> torch.Tensor:
    """A (28, 28) uint8 digit as MNIST has them, from any size, colour, or ink on paper either way."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are paper: put the image on white before dropping its colour.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    grey = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))
    edges = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = edges.median()
    # MNIST's ink is bright on black: dark ink on light paper is turned around.
    ink = (paper - grey if paper > 127 else grey - paper).clamp(min=0)
    if ink.max() < 32:
        raise NoDigit("no ink: the image is blank or has no contrast")
    rows, cols = (ink > INK * ink.max()).nonzero(as_tuple=True)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ink = ink * (255 / ink.max())
    height, width = ink.shape
    scale = FIT / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = Image.fromarray(ink.to(torch.uint8).numpy()).resize(size, Image.Resampling.LANCZOS)
    digit = torch.from_numpy(np.asarray(fitted, dtype=np.float32))
    return _centred(digit).round().clamp(0, 255).to(torch.uint8)


def _centred(digit: torch.Tensor) -> torch.Tensor:
    """`digit` placed in 28×28 with its centre of mass at the centre, as MNIST did."""
    height, width = digit.shape
    total = digit.sum()
    centre_row = (digit.sum(1) * torch.arange(height)).sum() / total
    centre_col = (digit.sum(0) * torch.arange(width)).sum() / total
    # MNIST's centres of mass lie at pixel (14.0, 14.0) (the test set's mean; sd 0.3), not at
    # (13.5, 13.5): half a pixel off, prepared MNIST digits differed from MNIST's own, and a
    # network read fewer of them right (benchmarks/RESULTS.md).
    target_row, target_col = IMAGE_SHAPE[0] / 2, IMAGE_SHAPE[1] / 2
    top, left = round(float(target_row - centre_row)), round(float(target_col - centre_col))
    canvas = torch.zeros(IMAGE_SHAPE)
    rows = slice(max(0, top), min(IMAGE_SHAPE[0], top + height))
    cols = slice(max(0, left), min(IMAGE_SHAPE[1], left + width))
    canvas[rows, cols] = digit[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return canvas
