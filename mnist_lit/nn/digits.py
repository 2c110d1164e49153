"""Digits from the real world, prepared the way MNIST itself was made: grey, ink bright on black,
cropped to the ink, scaled to fit 20×20 keeping the aspect ratio, and placed in 28×28 with the
ink's centre of mass at the centre. Pillow reads and scales; torch does the arithmetic."""

import math
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_lit.nn.images import IMAGE_SHAPE

FIT = 20  # MNIST's digits fit a 20×20 box inside the 28×28 image
INK = 0.25  # a pixel is ink when it is this bright against the brightest, after the paper is removed
# A digit needs far fewer pixels than this: 8 Mi is a 4K screenshot, and a larger JPEG (a phone's
# photo) decodes at 1/2, 1/4 or 1/8 of its size. Checked before a pixel is decoded.
MAX_PIXELS = 2**23
# The longest side the ink is looked for at; the digit found is scaled to 20 pixels.
WORK = 1024


class NoDigit(ValueError):
    """The image holds nothing that looks like ink."""


class TooLarge(ValueError):
    """The image holds more pixels than a digit needs."""


def read(path: str | Path | IO[bytes]) -> Image.Image:
    """An image file (or its bytes in a file object) as Pillow reads it: any format, the first frame
    of an animation, a JPEG at the smallest scale that keeps WORK pixels a side; TooLarge, before
    decoding, if that is more than MAX_PIXELS."""
    with warnings.catch_warnings():
        # Pillow's own warning comes at 89 million pixels, far above MAX_PIXELS.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)  # reads the header alone
        except Image.DecompressionBombError as error:
            raise TooLarge(f"the image claims too many pixels to decode; send one of at most {MAX_PIXELS:,}") from error
    with image:  # at its first frame, as Pillow opens every file
        image.draft(None, (WORK, WORK))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise TooLarge(f"the image is {width}×{height} pixels; send one of at most {MAX_PIXELS:,}")
        return ImageOps.exif_transpose(image)  # a copy, whether turned or not


def prepare(image: Image.Image) -> torch.Tensor:
    """A (28, 28) uint8 digit as MNIST has them, from any size, mode, colour, or ink on paper either way."""
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        # Transparent pixels are paper: put the image on white before dropping its colour.
        rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    grey = _reduced(_grey(image))
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


def _grey(image: Image.Image) -> torch.Tensor:
    """The image's brightness, from 0 to 255, as float32: 16-bit and float images scaled to 8 bits'
    range (Pillow's own conversion to "L" clips them), LAB by its lightness."""
    if image.mode == "LAB":
        image = image.getchannel("L")
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))
    grey = torch.from_numpy(np.asarray(image).astype(np.float32))
    brightest = float(grey.max()) if grey.numel() else 0.0
    if image.mode.startswith("I;16") or 255 < brightest <= 65535:
        full = 65535.0  # 16 bits
    elif image.mode == "F" and brightest <= 1:
        full = 1.0  # floats from 0 to 1
    else:
        full = max(brightest, 255.0)
    return grey * (255 / full)


def _reduced(grey: torch.Tensor) -> torch.Tensor:
    """`grey` with its longest side at most WORK pixels, each new pixel the mean of those it covers:
    the ink is found as well, for a fraction of the memory."""
    factor = math.ceil(max(grey.shape) / WORK)
    if factor == 1:
        return grey
    return torch.nn.functional.avg_pool2d(grey[None, None], factor, ceil_mode=True)[0, 0]


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
