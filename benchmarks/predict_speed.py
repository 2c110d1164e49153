"""Images per second through `python -m mnist_lit.predict`'s path (read, prepare as MNIST was
made, classify), start-up aside: 500 digits drawn dark on light as 200×200 JPEGs.

    python benchmarks/predict_speed.py <run dir or .ckpt> [--images 500]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from mnist_lit.nn import digits
from mnist_lit.runs.trained_network import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    model = load(args.checkpoint)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for i in range(args.images):
            page = Image.new("RGB", (200, 200), "white")
            x, y = torch.randint(20, 120, (2,), generator=generator).tolist()
            ImageDraw.Draw(page).ellipse((x, y, x + 60, y + 70), outline="black", width=9)
            files.append(Path(folder) / f"{i}.jpg")
            page.save(files[-1], quality=85)
        started = time.perf_counter()
        prepared = torch.stack([digits.prepare(digits.read(file)) for file in files])
        probabilities = model.predict(prepared)
        seconds = time.perf_counter() - started
    print(
        f"{len(files)} images in {seconds:.2f} s: {len(files) / seconds:.0f} images per second "
        f"({(probabilities.argmax(-1) == 0).float().mean():.0%} read as 0)"
    )


if __name__ == "__main__":
    main()
