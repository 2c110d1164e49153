"""Wall time of a 16-job seed sweep of the MLP run (10 epochs each), with the basic launcher (one job
after another) and with hydra/launcher=stacked (the 16 networks trained as one batched network).

    MNIST_LIT_DATA=../shared/data python benchmarks/sweep_stacked.py [--jobs 16] [--epochs 10] [--device cpu|cuda]

Whole processes are timed: start-up, data loading, training, testing, every job's files and the
summary. The goal on a CPU is a speed-up of 1.5 or more.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time


def sweep_seconds(jobs: int, epochs: int, device: str, extra: list[str]) -> float:
    seeds = ",".join(map(str, range(jobs)))
    accelerator = "gpu" if device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_lit",
                "-m",
                "model=mlp",
                f"seed={seeds}",
                f"trainer.max_epochs={epochs}",
                f"trainer.accelerator={accelerator}",
                "trainer.enable_progress_bar=false",
                *extra,
            ],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if not os.environ.get("MNIST_LIT_DATA"):
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    print(f"{args.jobs}-job seed sweep of the MLP, {args.epochs} epoch(s) each, {args.device}, {os.cpu_count()} cores")
    basic = sweep_seconds(args.jobs, args.epochs, args.device, [])
    stacked = sweep_seconds(args.jobs, args.epochs, args.device, ["hydra/launcher=stacked"])
    print(f"{'basic launcher':16} {basic:7.1f} s")
    print(f"{'stacked':16} {stacked:7.1f} s   speed-up {basic / stacked:.2f}x")


if __name__ == "__main__":
    main()
