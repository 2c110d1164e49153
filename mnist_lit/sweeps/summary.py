"""Hydra multirun: each sweep ends with one table and one picture of all its jobs.

`SweepSummary` is a Hydra callback (conf/config.yaml, hydra.callbacks), so every sweep gets
summary.csv, summary.md and summary.png in its sweep directory, whichever launcher ran it. A sweep
over seeds (seed=range(8)) also gets each configuration across its seeds (sweeps/seeds.py): a table
in summary.md, configurations.csv, and each configuration's mean curve with its 95 % band.
"""

import csv
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_lit.common import files
from mnist_lit.sweeps import seeds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

ERROR_FILE = "error.txt"
COLUMNS = (
    "job",
    "overrides",
    "status",
    "parameters",
    "val_accuracy",
    "best_val_accuracy",
    "val_loss",
    "train_seconds",
    "directory",
    "error",
)


def record_failure(output_dir: Path, error: Exception) -> None:
    """Keep a failed job's error for the summary, so that the sweep goes on with the next job."""
    # A bad value is explained by its message; anything else needs its traceback in the job's log.
    log.error("This job failed, the sweep goes on: %s", error, exc_info=not isinstance(error, CompactHydraException))
    files.text(output_dir / ERROR_FILE, f"{type(error).__name__}: {error}\n")


def summarise(sweep_dir: Path, stopped: bool = False) -> list[dict[str, Any]]:
    """summary.csv, summary.md and summary.png over every job directory of the sweep."""
    jobs = read_jobs(sweep_dir)
    if not jobs:
        return jobs
    table = markdown(jobs) + _best(sweep_dir, jobs)
    configurations = seeds.configurations(jobs)
    seeded = any(row["n"] > 1 for row in configurations)
    if seeded:
        table += (
            "\nAcross seeds: mean ± sd [95 % interval of the mean]; each configuration against the best, seed by "
            "seed (a paired t-test, Holm-corrected):\n\n" + seeds.markdown(configurations)
        )
        write_csv([seeds.flat(row) for row in configurations], sweep_dir / "configurations.csv", seeds.CSV_COLUMNS)
    write_csv(jobs, sweep_dir / "summary.csv")
    files.text(sweep_dir / "summary.md", table)
    files.figure(sweep_dir / "summary.png", plot(jobs, configurations if seeded else None))
    searched = [job for job in jobs if job.get("trial") is not None]
    if searched:
        files.figure(sweep_dir / "search.png", search_plot(searched, _found(sweep_dir).get("best_trial")))
    log.info("Sweep summary:\n%s", table)
    written = "summary.csv, configurations.csv" if seeded else "summary.csv"
    written += ", search.png" if searched else ""
    log.info("Wrote %s, summary.md and summary.png to %s", written, sweep_dir)
    if stopped:
        print(f"Sweep stopped: continue with the same command and resume={sweep_dir}", file=sys.stderr, flush=True)
    return jobs


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = summarise(sweep_dir)
        failed = [job["job"] for job in jobs if not ended(job)]
        if failed:
            # Hydra turns exceptions of end-callbacks into warnings; a sweep that lost jobs must
            # still exit non-zero, as a single failed run does.
            sys.exit(
                f"{len(failed)} of {len(jobs)} jobs failed (job {', '.join(failed)}): see {sweep_dir / 'summary.md'}"
            )


def ended(job: dict[str, Any]) -> bool:
    """Whether a job ended as asked: trained all its epochs, or stopped where Optuna pruned it."""
    return bool(job["status"] == "ok" or job["status"].startswith("pruned"))


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of the sweep, in job order; the overrides that every job
    shares (experiment=..., say) are left out of the labels."""
    dirs = sorted(
        (p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")), key=lambda p: (len(p.name), p.name)
    )
    overrides = [[str(o) for o in OmegaConf.load(d / ".hydra" / "overrides.yaml")] for d in dirs]
    shared: set[str] = set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()
    return [
        _read_job(d, [o for o in job_overrides if o not in shared])
        for d, job_overrides in zip(dirs, overrides, strict=True)
    ]


def _read_job(job_dir: Path, overrides: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(job=job_dir.name, overrides=" ".join(overrides), directory=str(job_dir))
    # Jobs that differ only in their seed are one configuration.
    row["configuration"] = " ".join(o for o in overrides if not o.startswith(("seed=", "data.seed=")))
    config = (
        OmegaConf.load(job_dir / ".hydra" / "config.yaml") if (job_dir / ".hydra" / "config.yaml").exists() else None
    )
    row["seed"] = config.get("seed") if isinstance(config, DictConfig) else None
    row["objective"] = "val_accuracy"
    if isinstance(config, DictConfig):
        row.update(max_epochs=OmegaConf.select(config, "trainer.max_epochs"), trial=config.get("trial"))
        row["objective"] = config.get("objective", row["objective"])
    names = tuple(dict.fromkeys(("val_accuracy", "val_loss", row["objective"])))
    history = read_metrics(job_dir / "metrics.csv", names)
    row["history"] = history
    if history["val_accuracy"]:
        row.update(
            val_accuracy=history["val_accuracy"][-1],
            best_val_accuracy=max(history["val_accuracy"]),
            val_loss=history["val_loss"][-1],
        )
    if (job_dir / ERROR_FILE).exists():
        row.update(status="failed", error=(job_dir / ERROR_FILE).read_text().strip().splitlines()[0])
    elif (job_dir / "results.json").exists():
        results = json.loads((job_dir / "results.json").read_text())
        row.update(status="ok", parameters=results["parameters"], train_seconds=round(results["train_seconds"], 2))
        if "pruned_at_epoch" in results:
            row["status"] = f"pruned at epoch {results['pruned_at_epoch']}"
        row["epochs"] = results.get("epochs")
    else:
        row["status"] = "interrupted"
    return row


def _best(sweep_dir: Path, jobs: list[dict[str, Any]]) -> str:
    """What a searching sweeper (Optuna's) found best, as it wrote it in the sweep directory; how
    its trials ended, and the epochs they trained against those of a search that prunes none."""
    path = sweep_dir / "optimization_results.yaml"
    found = _found(sweep_dir)
    if not found:
        return ""
    if "best_params" in found:
        params = " ".join(f"{key}={value}" for key, value in found.best_params.items())
        text = f"\nBest, by {found.name}: {params} ({found.best_value:.4g}; trial {found.best_trial}, {path.name})\n"
    elif "solutions" in found:
        text = f"\n{found.name} found several best trials: see {path.name}\n"
    else:
        text = f"\n{found.name} found no best trial: no trial completed\n"
    if "trials" in found:
        text += "Trials: " + ", ".join(f"{count} {state}" for state, count in found.trials.items())
        trained = [job for job in jobs if isinstance(job.get("epochs"), int) and job.get("max_epochs")]
        if trained:
            epochs, unpruned = sum(job["epochs"] for job in trained), sum(job["max_epochs"] for job in trained)
            text += f"; {epochs} epochs trained, of the {unpruned} a search without pruning trains"
        text += "\n"
    if found.get("importances"):
        importances = ", ".join(f"{key} {value:.2f}" for key, value in found.importances.items())
        text += f"Parameter importances (Optuna's fANOVA): {importances}\n"
    return text


def _found(sweep_dir: Path) -> Any:
    """optimization_results.yaml, as a searching sweeper wrote it; empty where there is none."""
    path = sweep_dir / "optimization_results.yaml"
    return OmegaConf.load(path) if path.exists() else OmegaConf.create()


def read_metrics(path: Path, names: tuple[str, ...] = ("val_accuracy", "val_loss")) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {name: [] for name in names}
    if path.exists():
        with open(path) as f:
            for record in csv.DictReader(f):
                for name in history:
                    history[name].append(float(record[name]))
    return history


def write_csv(rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
    with files.atomic_write(path) as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown(jobs: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(job[c]) for c in COLUMNS) + " |" for job in jobs]
    return "\n".join(lines) + "\n"


def plot(jobs: list[dict[str, Any]], configurations: list[dict[str, Any]] | None = None) -> "Figure":
    """Validation accuracy and loss per epoch: one line per job, labelled by its overrides; or, for
    a sweep over seeds, each configuration's mean with the band of its 95 % interval."""
    from matplotlib.figure import Figure

    from mnist_lit.reports.history import epoch_axes

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = epoch_axes(fig, ("val_accuracy", "val_loss"))
    if configurations is not None:
        _bands(axes, configurations)
        return fig
    for job in jobs:
        history = job["history"]
        epochs = range(1, len(history["val_accuracy"]) + 1)
        label = job["overrides"] or f"job {job['job']}"
        ended_as = "" if job["status"] == "ok" else f" ({job['status']})"
        for ax, name in zip(axes, ("val_accuracy", "val_loss"), strict=True):
            (line,) = ax.plot(epochs, history[name], "o-", label=label + ended_as)
            if job["status"].startswith("pruned") and history[name]:
                ax.plot(epochs[-1], history[name][-1], "X", color=line.get_color(), markersize=12)
    axes[0].legend(fontsize="small")
    return fig


def search_plot(jobs: list[dict[str, Any]], best: int | None) -> "Figure":
    """An Optuna search: each trial's objective by epoch, those it pruned cut short where it pruned
    them (grey, crossed), the `best` trial's (as Optuna found it) drawn bold."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    name = jobs[0]["objective"]
    values = {job["trial"]: job["history"][name] for job in jobs if job["history"][name]}
    for job in jobs:
        series = values.get(job["trial"])
        if not series:
            continue
        epochs = range(1, len(series) + 1)
        if job["status"].startswith("pruned"):
            ax.plot(epochs, series, "-", color="0.6", lw=1, label="pruned")
            ax.plot(epochs[-1], series[-1], "X", color="0.4", markersize=9)
        elif job["trial"] == best:
            ax.plot(epochs, series, "o-", color="C3", lw=2.5, zorder=3, label=f"best: trial {job['trial']}")
        else:
            ax.plot(epochs, series, "-", color="C0", lw=1, alpha=0.8, label="complete")
    handles, labels = ax.get_legend_handles_labels()
    shown = dict(zip(labels, handles, strict=True))  # one entry a kind
    ax.legend(shown.values(), shown.keys(), fontsize="small")
    ax.set(xlabel="epoch", ylabel=name, title=f"{len(jobs)} trials: {name} by epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _bands(axes: list[Any], configurations: list[dict[str, Any]]) -> None:
    for row in configurations:
        histories = [job["history"] for job in row["seeds"].values()]
        label = f"{row['configuration'] or 'all'} (n={row['n']})"
        for ax, name in zip(axes, ("val_accuracy", "val_loss"), strict=True):
            count = min(len(history[name]) for history in histories)
            spreads = [seeds.spread([history[name][e] for history in histories]) for e in range(count)]
            epochs = range(1, count + 1)
            (line,) = ax.plot(epochs, [s.mean for s in spreads], "o-", label=label)
            if row["n"] > 1:
                lows = [s.mean if s.low is None else s.low for s in spreads]
                highs = [s.mean if s.high is None else s.high for s in spreads]
                ax.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2)
    axes[0].legend(fontsize="small")
