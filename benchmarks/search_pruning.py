"""One Optuna search three ways: without pruning on the basic launcher (the baseline), with
successive halving on the basic launcher, and with successive halving on the stacked launcher; then
the baseline's best configuration against the stacked search's, over seeds, on the test images.

    MNIST_LIT_DATA=../shared/data python benchmarks/search_pruning.py [--trials 32] [--epochs 10]
        [--jobs 8] [--seeds 8] [--ways baseline pruned stacked]

The search (experiment=search, which selects on 5,000 held-out training images): optimizer.lr on a
log scale from 1e-4 to 1e-1, one hidden layer of 64, 128 or 256 units, and model.activation
(relu, tanh, gelu, elu); TPE seeded by seed=0, `--jobs` trials asked at a time. Successive halving:
min_resource=1, reduction_factor=4 (Optuna's default). Whole processes are timed. "epochs" adds up
every trial's results.json epochs. The seeds: each best configuration trained `--seeds` times
(seed=range(n), stacked, the search's held-out split), test_accuracy compared seed by seed with
the paired t-test of sweeps/seeds.py.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from mnist_lit.sweeps.seeds import paired_p, spread

SPACE = (
    "hydra.sweeper.params={optimizer.lr:'tag(log, interval(1e-4, 1e-1))',"
    "model.hidden:'choice([64],[128],[256])',model.activation:'choice(relu,tanh,gelu,elu)'}"
)
PRUNING = ("hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=1")
WAYS = {"baseline": (), "pruned": PRUNING, "stacked": (*PRUNING, "hydra/launcher=stacked")}


def mnist_lit(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mnist_lit", "-m", "trainer.enable_progress_bar=false", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def search(way: str, trials: int, epochs: int, jobs: int, val_size: int, cwd: Path) -> dict[str, object]:
    sweep = cwd / way
    seconds = mnist_lit(
        [
            "experiment=search",
            f"data.val_size={val_size}",
            SPACE,
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={jobs}",
            f"trainer.max_epochs={epochs}",
            f"hydra.sweep.dir={sweep}",
            *WAYS[way],
        ],
        cwd,
    )
    found = OmegaConf.load(sweep / "optimization_results.yaml")
    trained = [json.loads(path.read_text())["epochs"] for path in sweep.glob("*/results.json")]
    return {
        "seconds": seconds,
        "epochs": sum(trained),
        "best": {str(key): value for key, value in found.best_params.items()},
        "best_value": float(found.best_value),
        "trials": dict(found.trials),
    }


def test_accuracies(
    best: dict[str, object], seeds: int, epochs: int, val_size: int, cwd: Path, name: str
) -> list[float]:
    sweep = cwd / f"seeds-{name}"
    mnist_lit(
        [
            "model=mlp",
            f"data.val_size={val_size}",
            *(f"{key}={value}" for key, value in best.items()),
            f"seed=range({seeds})",
            f"trainer.max_epochs={epochs}",
            "hydra/launcher=stacked",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd,
    )
    runs = sorted(sweep.glob("*/results.json"), key=lambda path: int(path.parent.name))
    return [json.loads(path.read_text())["test_accuracy"] for path in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--val-size", type=int, default=5000, help="held-out training images (experiment=search's)")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cwd = Path(directory)
        found = {}
        for way in args.ways:
            found[way] = search(way, args.trials, args.epochs, args.jobs, args.val_size, cwd)
            print(way, json.dumps(found[way]), flush=True)
        print("\n| search | wall time | epochs trained | trials | best val_accuracy | best configuration |")
        print("| --- | --- | --- | --- | --- | --- |")
        base = found.get("baseline")
        for way, row in found.items():
            ratio = f" ({row['seconds'] / base['seconds']:.2f}×)" if base and way != "baseline" else ""
            trials = ", ".join(f"{count} {state}" for state, count in row["trials"].items())
            best = " ".join(f"{key}={value}" for key, value in row["best"].items())
            print(
                f"| {way} | {row['seconds']:.0f} s{ratio} | {row['epochs']} | {trials} | {row['best_value']:.4f} | "
                f"{best} |"
            )
        if args.seeds and base and "stacked" in found:
            ours = test_accuracies(found["stacked"]["best"], args.seeds, args.epochs, args.val_size, cwd, "stacked")
            theirs = test_accuracies(base["best"], args.seeds, args.epochs, args.val_size, cwd, "baseline")
            differences = [a - b for a, b in zip(ours, theirs, strict=True)]
            for name, values in (("baseline's best", theirs), ("stacked search's best", ours)):
                s = spread(values)
                print(f"{name}: test_accuracy {s.mean:.4f} ± {statistics.stdev(values):.4f} over {len(values)} seeds")
            d = spread(differences)
            interval = "" if d.low is None else f" [{d.low:+.4f}, {d.high:+.4f}]"
            p = paired_p(differences) if any(differences) else 1.0
            print(f"stacked − baseline, seed by seed: {d.mean:+.4f}{interval} (paired t-test p = {p:.3g})")


if __name__ == "__main__":
    main()
