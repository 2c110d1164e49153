"""What one upload to `POST /predict` costs the server in memory and time, measured in a process of
its own (ru_maxrss: its peak resident memory), through the app as uvicorn serves it:

- a 12-megapixel JPEG, as a phone takes them, of a dark stroke on paper;
- a 4.9 KB PNG of 6,300 × 6,300 blank pixels (a decompression bomb under Pillow's own cap);
- two rounds of 100 uploads that decode and then fail (blank images, no digit: 422; and PNGs cut
  short: 400): the second round's growth of the resident memory, which memory kept after an
  error would show. Each reading first hands freed memory back (glibc's malloc_trim), yet the
  allocator still leaves about ±100 MiB of noise between readings; keeping each failed upload's
  decoded 2800 × 2800 image would add 750 MiB a round.

Each peak is the rise of the process's peak memory over what it had reached before that upload.
Prints one JSON object; tests/test_serve.py holds the bounds.

    python benchmarks/serve_memory.py <run dir or .ckpt>
"""

import ctypes
import ctypes.util
import gc
import io
import json
import resource
import sys
import time

from PIL import Image


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def resident_mib() -> float:
    gc.collect()
    if libc := ctypes.util.find_library("c"):
        getattr(ctypes.CDLL(libc), "malloc_trim", lambda pad: None)(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def encoded(image: Image.Image, format: str, **settings: object) -> bytes:
    body = io.BytesIO()
    image.save(body, format, **settings)
    return body.getvalue()


def main() -> None:
    from starlette.testclient import TestClient

    from mnist_lit import load
    from mnist_lit.web.app import application

    client = TestClient(application(load(sys.argv[1]), workers=1))
    stroke = Image.new("L", (64, 64), "white")
    stroke.paste(0, (28, 8, 36, 56))
    photo = Image.new("RGB", (4000, 3000), (235, 230, 220))
    photo.paste((30, 30, 40), (1900, 700, 2100, 2300))
    uploads = {
        "bomb": encoded(Image.new("L", (6300, 6300)), "PNG", optimize=True),
        "photo": encoded(photo, "JPEG", quality=90),
    }
    blank = encoded(Image.new("L", (2800, 2800), 230), "PNG")
    cut_short = encoded(Image.effect_noise((2800, 2800), 64), "PNG")[:4_000_000]
    assert client.post("/predict", content=encoded(stroke, "PNG")).status_code == 200  # warmed up
    figures: dict[str, object] = {}
    for name, body in uploads.items():
        before, started = peak_mib(), time.perf_counter()
        status = client.post("/predict", content=body).status_code
        figures[name] = {
            "bytes": len(body),
            "status": status,
            "seconds": round(time.perf_counter() - started, 3),
            "peak_mib": round(peak_mib() - before, 1),
        }
    rounds = []
    for _ in range(2):
        statuses = {client.post("/predict", content=body).status_code for body in [blank, cut_short] * 50}
        rounds.append(resident_mib())
    figures["failing_uploads"] = {
        "statuses": sorted(statuses),
        "resident_mib_after_each_round": [round(mib, 1) for mib in rounds],
        "second_round_growth_mib": round(rounds[1] - rounds[0], 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
