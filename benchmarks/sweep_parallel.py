"""Wall time of one 4-job sweep, run one job after another and as 2 parallel joblib jobs.

    MNIST_LIT_DATA=../shared/data python benchmarks/sweep_parallel.py [--epochs 2]

Each parallel job gets cores / n_jobs torch threads (mnist_lit.sweeps.summary.SweepSummary), so the
two never ask for more threads than there are cores. Whole processes are timed: start-up,
data loading, training, testing and the summary.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

SWEEP = ["model=mlp", "model.activation=relu,tanh,sigmoid,elu", "trainer.enable_progress_bar=false"]
LAUNCHERS = {
    "sequential (basic launcher)": [],
    "2 parallel jobs (joblib)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def sweep_seconds(extra: list[str], epochs: int) -> float:
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mnist_lit", "-m", *SWEEP, f"trainer.max_epochs={epochs}", *extra],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("MNIST_LIT_DATA"):
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    print(f"4-job sweep ({' '.join(SWEEP)}), {args.epochs} epochs each, {os.cpu_count()} cores")
    seconds = {name: sweep_seconds(extra, args.epochs) for name, extra in LAUNCHERS.items()}
    baseline = next(iter(seconds.values()))
    for name, value in seconds.items():
        print(f"{name:28} {value:7.1f} s   speed-up {baseline / value:.2f}x")


if __name__ == "__main__":
    main()
