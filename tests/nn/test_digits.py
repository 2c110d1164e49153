"""nn/digits.py: an image from the real world read and prepared the way MNIST was made, whatever
its mode, size, ink or paper; what holds no digit, or more pixels than one needs, refused in a line."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lit.nn.digits import MAX_PIXELS, NoDigit, TooLarge, prepare, read
from tests.conftest import bomb, needs_real_mnist, png, real_test_set


def bar(size, box, ink="black", paper="white"):
    image = Image.new("RGB", size, paper)
    ImageDraw.Draw(image).rectangle(box, fill=ink)
    return image


def test_dark_ink_on_paper_and_bright_ink_on_black_prepare_alike():
    dark_on_light = prepare(bar((120, 90), (30, 20, 45, 70)))
    bright_on_dark = prepare(bar((120, 90), (30, 20, 45, 70), ink="white", paper="black"))
    assert torch.equal(dark_on_light, bright_on_dark)
    assert dark_on_light.dtype == torch.uint8 and dark_on_light.shape == (28, 28) and dark_on_light.max() == 255
    assert dark_on_light[0].sum() == 0  # the paper is black


def test_preparing_keeps_the_aspect_ratio_and_centres_the_mass():
    digit = prepare(bar((300, 200), (10, 10, 59, 209 // 2)))  # 50 wide, 96 high, far off centre
    rows, cols = (digit > 64).nonzero(as_tuple=True)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert height == 20 and abs(width - 20 * 50 / 96) <= 1
    mass = digit.float()
    centre = [(mass.sum(1 - axis) * torch.arange(28)).sum() / mass.sum() for axis in (0, 1)]
    assert all(abs(c - 14) <= 0.5 for c in centre)  # where MNIST's centres of mass lie


@needs_real_mnist
def test_preparing_mnists_own_digits_gives_them_back():
    """MNIST's test digits are already prepared as MNIST was made: preparing them again changes
    them by less than one grey level a pixel on average (redrawn, they are read as MNIST's own)."""
    images = real_test_set()[0][:1000]
    prepared = torch.stack([prepare(Image.fromarray(image.numpy())) for image in images])
    assert (prepared.float() - images.float()).abs().mean() < 1.0


@pytest.mark.parametrize("ink", [200, 169], ids=["blank", "31 levels of contrast"])
def test_an_image_without_contrast_has_no_digit(ink):
    with pytest.raises(NoDigit, match="^no ink: the image is blank or has no contrast$"):
        prepare(bar((64, 64), (28, 8, 36, 56), ink=(ink,) * 3, paper=(200,) * 3))


def test_32_levels_of_contrast_are_a_faint_digit():
    assert prepare(bar((64, 64), (28, 8, 36, 56), ink=(168,) * 3, paper=(200,) * 3)).max() == 255


@pytest.mark.parametrize(
    ("ink", "paper"), [((150,) * 3, "white"), ((210, 215, 205), (60, 70, 65))], ids=["pencil", "chalk on a board"]
)
def test_ink_of_any_strength_on_paper_of_any_shade_prepares_as_black_ink_on_white(ink, paper):
    expected = prepare(bar((120, 90), (30, 20, 45, 70))).int()
    assert (prepare(bar((120, 90), (30, 20, 45, 70), ink=ink, paper=paper)).int() - expected).abs().max() <= 1


# Brightness from 0 to 1 on each deeper scale, and the dtype that Pillow reads as its mode: I;16, I or F.
SCALED = {"I;16": (65535, np.uint16), "I": (65535, np.int32), "F": (1, np.float32), "F255": (255, np.float32)}


def deeper(grey: np.ndarray, mode: str) -> Image.Image:
    full, dtype = SCALED[mode]
    return Image.fromarray((grey * full).astype(dtype))


def in_mode(mode: str) -> Image.Image:
    """The bar below, ink black on white, as an image of `mode`: transparent paper where the mode
    has alpha (16-bit, 32-bit and float brightness: test_deeper_images_keep_their_mid_tones)."""
    grey = np.asarray(bar((120, 90), (30, 20, 45, 70)).convert("L"), dtype=np.float64) / 255
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        ink = np.zeros((*grey.shape, 4), dtype=np.uint8)
        ink[..., 3] = ((1 - grey) * 255).astype(np.uint8)  # paper: transparent
        rgba = Image.fromarray(ink, "RGBA")
        return rgba.convert("LA").convert("La") if mode == "La" else rgba.convert(mode)
    if mode == "P":
        # Dark green paper, transparent: read as what it is, it would be no paper for black ink.
        image = bar((120, 90), (30, 20, 45, 70), paper=(0, 100, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
        image.info["transparency"] = image.getpixel((0, 0))
        return image
    return bar((120, 90), (30, 20, 45, 70)).convert(mode)


MODES = ["RGB", "RGBA", "RGBa", "LA", "La", "PA", "P", "LAB", "CMYK"]


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_prepares_as_its_8_bit_grey(mode):
    expected = prepare(in_mode("L")).int()
    assert (prepare(in_mode(mode)).int() - expected).abs().max() <= 1, mode


def test_a_photo_sized_image_prepares_as_its_small_copy():
    """A 4,800-pixel-wide scan is looked at reduced to 1,024 a side: the same digit as drawn small."""
    small = prepare(bar((120, 90), (30, 20, 45, 70)))
    large = prepare(bar((4800, 3600), (1200, 800, 1839, 2839)))
    assert (large.int() - small.int()).abs().float().mean() < 4


def test_an_image_is_read_if_its_pixels_fit_the_limit_and_refused_in_a_line_before_decoding_if_not():
    assert read(io.BytesIO(png(Image.new("L", (4096, MAX_PIXELS // 4096))))).size == (4096, 2048)
    with pytest.raises(TooLarge, match="^the image is 4096×2049 pixels; send one of at most 8,388,608$"):
        read(io.BytesIO(png(Image.new("L", (4096, 2049)))))
    with pytest.raises(TooLarge, match="^the image claims too many pixels to decode; send one of at most 8,388,608$"):
        read(io.BytesIO(bomb()))  # Pillow's own limit, from the header alone


def test_a_large_jpeg_is_read_at_the_smallest_scale_that_keeps_1024_pixels_a_side():
    """A 16-megapixel photo, over the limit at its full size, decodes at a quarter of each side."""
    photo = bar((4096, 4096), (1900, 700, 2200, 3300)).convert("L")
    body = io.BytesIO()
    photo.save(body, "JPEG", quality=90)
    image = read(body)
    assert image.size == (1024, 1024)
    small = prepare(photo.resize((1024, 1024), Image.Resampling.BOX)).int()
    assert (prepare(image).int() - small).abs().float().mean() < 1


@pytest.mark.parametrize("mode", SCALED)
def test_deeper_images_keep_their_mid_tones(mode):
    """A box of mid grey beside the bar: 16-bit, 32-bit and float brightness scaled to 8 bits,
    not clipped to them (Pillow's own conversion to L would make the box paper)."""
    toned = bar((120, 90), (30, 20, 45, 70))
    ImageDraw.Draw(toned).rectangle((60, 20, 75, 70), fill=(128, 128, 128))
    toned = toned.convert("L")
    expected = prepare(toned).int()
    assert (prepare(deeper(np.asarray(toned, dtype=np.float64) / 255, mode)).int() - expected).abs().max() <= 1
