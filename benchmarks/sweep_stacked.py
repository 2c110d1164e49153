"""Wall time of MLP sweeps with the basic launcher (one job after another) and with
hydra/launcher=stacked (the jobs trained as one batched network), and how far the stacked jobs'
numbers are from the same jobs run alone.

    MNIST_LIT_DATA=../shared/data python benchmarks/sweep_stacked.py [--sweep seed lr width]
        [--jobs 16] [--epochs 10] [--repeats 1] [--device cpu|cuda]

Sweeps: `seed` (seeds 0…jobs-1), `lr` (optimizer.lr=1e-3,3e-3 × jobs/2 seeds), `width`
(experiment=width: 32, 100, 256 and 512 units; --jobs does not apply). Whole processes are timed:
start-up, data loading, training, testing, every job's files and the summary; with --repeats the two
launchers take turns, and the median of each is reported. "val_accuracy Δ" is the largest
difference, over every job and epoch, between a job's val_accuracy stacked and alone (the basic
launcher's run of it), from their metrics.csv.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def overrides(sweep: str, jobs: int) -> list[str]:
    if sweep == "seed":
        return [f"seed={','.join(map(str, range(jobs)))}"]
    if sweep == "lr":
        return ["optimizer.lr=1e-3,3e-3", f"seed={','.join(map(str, range(max(1, jobs // 2))))}"]
    return ["experiment=width"]


def run(sweep: str, jobs: int, epochs: int, device: str, stacked: bool, cwd: Path) -> float:
    """Seconds the sweep's process took; its jobs' directories are left under `cwd`."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_lit",
            "-m",
            "model=mlp",
            *overrides(sweep, jobs),
            f"trainer.max_epochs={epochs}",
            f"trainer.accelerator={accelerator}",
            "trainer.enable_progress_bar=false",
            "hydra.sweep.dir=sweep",
            *(["hydra/launcher=stacked"] if stacked else []),
        ],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def val_accuracies(sweep_dir: Path) -> dict[str, list[float]]:
    """Each job's val_accuracy per epoch, by job number."""
    found = {}
    for metrics in sweep_dir.glob("*/metrics.csv"):
        with metrics.open() as f:
            found[metrics.parent.name] = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    return found


def largest_difference(alone: dict[str, list[float]], stacked: dict[str, list[float]]) -> float:
    if alone.keys() != stacked.keys() or not alone:
        raise SystemExit(f"the two sweeps left different jobs: {sorted(alone)} and {sorted(stacked)}")
    return max(abs(a - s) for job in alone for a, s in zip(alone[job], stacked[job], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", nargs="+", default=["seed"], choices=["seed", "lr", "width"])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if not os.environ.get("MNIST_LIT_DATA"):
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    print(f"MLP sweeps, {args.epochs} epoch(s) each, {args.device}, {os.cpu_count()} cores, {args.repeats} repeat(s)")
    print(f"{'sweep':28} {'basic':>8} {'stacked':>8} {'ratio':>6} {'speed-up':>8} {'val_accuracy Δ':>15}")
    for sweep in args.sweep:
        times: dict[bool, list[float]] = {False: [], True: []}
        difference = 0.0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as alone, tempfile.TemporaryDirectory() as together:
                for stacked, cwd in ((False, Path(alone)), (True, Path(together))):
                    times[stacked].append(run(sweep, args.jobs, args.epochs, args.device, stacked, cwd))
                difference = max(
                    difference,
                    largest_difference(val_accuracies(Path(alone) / "sweep"), val_accuracies(Path(together) / "sweep")),
                )
        basic, stacked = statistics.median(times[False]), statistics.median(times[True])
        label = f"{sweep} ({' '.join(overrides(sweep, args.jobs))})"[:28]
        ratio = stacked / basic
        print(f"{label:28} {basic:7.1f}s {stacked:7.1f}s {ratio:6.2f} {1 / ratio:7.2f}x {difference:15.4f}")
        if args.repeats > 1:
            each = {launcher: " ".join(f"{t:.1f}" for t in times[launcher]) for launcher in times}
            print(f"{'':28} basic {each[False]}; stacked {each[True]}")


if __name__ == "__main__":
    main()
