"""Seconds per epoch of one MLP job alone, and of each job of a 2-job submitit_local sweep whose
jobs run at the same time: with threads=auto each job takes its share of the cores, and the
jobs run about as fast as one alone with the same threads. `--oversubscribe` adds the same
sweep with every job asking for all the cores, to show what the share prevents.

    pip install -e ".[submitit]"
    MNIST_LIT_DATA=../shared/data python benchmarks/threads_share.py [--epochs 3] [--oversubscribe]

Per-epoch time is results.json's train_seconds / epochs (training and validation).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mnist_lit.runs.machine import cores

JOB = ["model=mlp", "trainer.enable_progress_bar=false"]


def seconds_per_epoch(args: list[str], epochs: int) -> tuple[list[float], list[int]]:
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run(
            [sys.executable, "-m", "mnist_lit", *args, *JOB, f"trainer.max_epochs={epochs}"],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        results = [json.loads(p.read_text()) for p in sorted(Path(cwd).glob("outputs/**/results.json"))]
    return [r["train_seconds"] / r["epochs"] for r in results], [r["torch_threads"] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--oversubscribe", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("MNIST_LIT_DATA"):
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    share = max(1, cores() // 2)
    sweep = ["-m", "seed=0,1", "hydra/launcher=submitit_local"]
    cases = {
        f"one job alone, threads={share}": [f"threads={share}"],
        "2-job submitit_local sweep, threads=auto": sweep,
    }
    if args.oversubscribe:
        cases[f"2-job submitit_local sweep, threads={cores()}"] = [*sweep, f"threads={cores()}"]
    print(f"MLP, {args.epochs} epochs a job, {cores()} cores")
    baseline = None
    for name, extra in cases.items():
        seconds, threads = seconds_per_epoch(extra, args.epochs)
        median = statistics.median(seconds)
        baseline = baseline or median
        print(f"{name:45} {median:6.2f} s/epoch  x{median / baseline:.2f}  (threads {threads})")


if __name__ == "__main__":
    main()
