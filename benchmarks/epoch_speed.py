"""An epoch of mnist_lit against the loop a user writes by hand, each as its user runs it.

The reference is benchmarks/plain_loop.py, in a clean process that imports torch and torchvision
only (lightning slows every optimizer step of a process that imports it; see train.py), timed
before and after mnist_lit's runs and the mean taken. Two ratios, each the median of 3 epochs:

- loop: mnist_lit's training loop (its `fit` path from the start of a training epoch to the start
  of that epoch's validation, in a process of its own) against the plain loop's training;
- whole epoch: what one more epoch of `python -m mnist_lit` costs, (T3 - T1) / 2 for whole runs of
  3 and 1 epochs (validation, checkpoints and files included), against the plain loop's training
  and evaluation; the median of --repeats pairs. T1 minus that marginal epoch is the run's fixed
  cost (benchmarks/fixed_cost.py says where it goes).

    MNIST_LIT_DATA=../shared/data python benchmarks/epoch_speed.py [--device cuda] [--models mlp] [overrides ...]

Timings on a shared machine are noisy: compare the ratios, one benchmark at a time, and run it twice.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
MODELS = {"logreg": "model=logreg", "mlp": "model=mlp"}

# mnist_lit's training loop, timed from inside a process of its own.
TIMED_FIT = """
import json, sys, time, tempfile
import lightning as L
import torch
import mnist_lit

class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds = []
    def on_train_epoch_start(self, trainer, module):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.started = time.perf_counter()
    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            if module.device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)

timer = EpochTimer()
with tempfile.TemporaryDirectory() as output_dir:
    mnist_lit.fit(*sys.argv[1:], output_dir=output_dir, callbacks=[timer])
print(json.dumps(timer.seconds))
"""


def plain(root: str, model: str, device: str) -> tuple[float, float]:
    """The plain loop's median training seconds, and median training + evaluation seconds."""
    done = subprocess.run(
        [sys.executable, str(HERE / "plain_loop.py"), root, model, "--device", device],
        capture_output=True,
        text=True,
        check=True,
    )
    epochs = json.loads(done.stdout.strip().splitlines()[-1])["epochs"]
    return statistics.median(e["train"] for e in epochs), statistics.median(e["train"] + e["evaluate"] for e in epochs)


def loop(overrides: list[str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", TIMED_FIT, *overrides, "trainer.max_epochs=3", "trainer.enable_progress_bar=false"],
        capture_output=True,
        text=True,
        check=True,
    )
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))


def whole_run(overrides: list[str], epochs: int) -> float:
    """Wall seconds of `python -m mnist_lit` from start to exit."""
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_lit",
                *overrides,
                f"trainer.max_epochs={epochs}",
                "hydra.run.dir=run",
                "trainer.enable_progress_bar=false",
            ],
            cwd=cwd,
            capture_output=True,
            check=True,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="mnist_lit overrides, e.g. capture=false")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both train")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of whole runs (1 and 3 epochs)")
    args = parser.parse_args()
    root = os.environ.get("MNIST_LIT_DATA")
    if not root:
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    accelerator = {"cpu": "cpu", "cuda": "gpu"}[args.device]

    rows = []
    for name in args.models:
        overrides = [MODELS[name], f"trainer.accelerator={accelerator}", *args.overrides]
        before = plain(root, name, args.device)
        ours = loop(overrides)
        # Whole runs of 1 and 3 epochs in turn, so that the machine's drift falls on both alike.
        pairs = [(whole_run(overrides, 1), whole_run(overrides, 3)) for _ in range(args.repeats)]
        after = plain(root, name, args.device)
        train, epoch = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        marginal = statistics.median((t3 - t1) / 2 for t1, t3 in pairs)
        fixed = statistics.median(t1 - (t3 - t1) / 2 for t1, t3 in pairs)
        rows.append((name, train, ours, epoch, marginal, fixed))

    import torch  # only now: the plain loops ran in clean processes

    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(
        f"\n{where}, torch {torch.__version__}, overrides {args.overrides or 'none'}; "
        f"medians of 3 epochs and of {args.repeats} pairs of whole runs"
    )
    print("network | plain train | mnist_lit loop | ratio | plain epoch | marginal epoch | ratio | fixed cost")
    for name, train, ours, epoch, marginal, fixed in rows:
        print(
            f"{name} | {train:.2f} s | {ours:.2f} s | {ours / train:.2f} | {epoch:.2f} s | {marginal:.2f} s | "
            f"{marginal / epoch:.2f} | {fixed:.1f} s"
        )


if __name__ == "__main__":
    main()
