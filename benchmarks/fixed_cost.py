"""Where a whole run of `python -m mnist_lit` spends its time, outside its epochs and in them.

Runs the command line in a process of its own (a probe that imports what a run imports, then calls
the same `main`) and splits its wall time, as its user waits for it, into:

- start: the interpreter, until the probe's first line;
- imports: torch, torchvision, lightning, torchmetrics, hydra, matplotlib and mnist_lit;
- setup: config, data, network, Trainer, until the first training step;
- epochs: training, validation, checkpoints and the epoch's files, each epoch;
- test and files: from the end of the last epoch to the end of the run (history picture, test,
  confusion matrix, mistakes, results);
- exit: from the run's end until the process is gone (Hydra's return, atexit, teardown).

The run's fixed cost is everything but the epochs. Medians of --repeats runs (3).

    MNIST_LIT_DATA=../shared/data python benchmarks/fixed_cost.py [--repeats 3] [overrides ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PHASES = ["start", "imports", "setup", "epochs", "test and files", "exit"]

# Marks each phase's end on the wall clock (time.time: the parent's and the probe's clocks agree),
# through the run's own seams: a callback handed to build.run and mnist_lit.runs.train.train's return.
PROBE = """
import time
started = time.time()
import atexit, json, os, sys
marks = {"start": started}
# Registered first, so it runs after every other atexit handler.
atexit.register(lambda: print("PHASES " + json.dumps(marks), file=sys.__stderr__, flush=True))

import lightning as L
import matplotlib.figure
import mnist_lit.__main__
import mnist_lit.runs.train
from mnist_lit.runs import build
marks["imports"] = time.time()

class Marks(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        marks.setdefault("setup", time.time())
    def on_train_end(self, trainer, module):
        marks["epochs"] = time.time()

run, train = build.run, mnist_lit.runs.train.train
build.run = lambda cfg, output_dir, callbacks=(): run(cfg, output_dir, [*callbacks, Marks()])
def timed_train(*args, **kwargs):
    try:
        return train(*args, **kwargs)
    finally:
        marks["test and files"] = time.time()
mnist_lit.runs.train.train = timed_train
sys.argv = ["mnist_lit", *sys.argv[1:]]
mnist_lit.__main__.main()
"""


def one_run(overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cwd:
        began = time.time()
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *overrides, "hydra.run.dir=run", "trainer.enable_progress_bar=false"],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stderr.splitlines() if line.startswith("PHASES "))
    marks = json.loads(line.removeprefix("PHASES "))
    ends = [marks[phase] for phase in PHASES[:-1]] + [ended]
    return {phase: end - start for phase, start, end in zip(PHASES, [began, *ends[:-1]], ends, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="mnist_lit overrides (default: model=logreg, 1 epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("MNIST_LIT_DATA"):
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    overrides = ["model=logreg", "trainer.max_epochs=1", *args.overrides]
    runs = [one_run(overrides) for _ in range(args.repeats)]
    median = {phase: statistics.median(r[phase] for r in runs) for phase in PHASES}

    import torch  # only now: the runs had the machine to themselves

    where = f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
    print(f"\n{where}, {' '.join(overrides)}; medians of {args.repeats}")
    print("phase | seconds | of the wall time")
    wall = statistics.median(sum(r.values()) for r in runs)
    for phase in PHASES:
        print(f"{phase} | {median[phase]:.2f} s | {median[phase] / wall:.0%}")
    fixed = statistics.median(sum(v for k, v in r.items() if k != "epochs") for r in runs)
    print(f"whole run | {wall:.2f} s |\nfixed cost (all but the epochs) | {fixed:.2f} s | {fixed / wall:.0%}")


if __name__ == "__main__":
    main()
