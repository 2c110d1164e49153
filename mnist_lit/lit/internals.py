"""Where mnist_lit relies on Lightning's internals, for want of a public API: each use is here, with
the API it misses, and tests/test_internals.py fails naming what moved when a release moves one."""

import ast
import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L


@cache
def trainer_arguments() -> dict[str, Any]:
    """The arguments of lightning.Trainer, each with its default, read from Lightning's source: the
    command line composes and checks a config before it imports torch, which Lightning imports.

    Missing: a description of the Trainer's arguments that does not import torch."""
    spec = importlib.util.find_spec("lightning")
    assert spec is not None and spec.submodule_search_locations, "lightning is not installed"
    source = Path(spec.submodule_search_locations[0], "pytorch", "trainer", "trainer.py")
    [trainer] = (node for node in ast.parse(source.read_text()).body if getattr(node, "name", "") == "Trainer")
    assert isinstance(trainer, ast.ClassDef)
    [init] = (node for node in trainer.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    keywords = init.args.kwonlyargs
    return {name.arg: ast.literal_eval(default) for name, default in zip(keywords, init.args.kw_defaults, strict=True)}  # type: ignore[arg-type]


def count_optimizer_steps(trainer: "L.Trainer", steps: int) -> None:
    """Steps the engine took itself, out of Lightning's sight (it counts those of its own optimizer
    wrapper): counted where trainer.global_step, max_steps and the checkpoints read them.

    Missing: a public way to report optimizer steps taken outside `LightningOptimizer.step` (as
    Keras's steps_per_execution takes many per call); the loop's progress counter is the place."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for _ in range(steps):
        progress.increment_ready()
        progress.increment_completed()


def carry_optimizer_steps(checkpoint: dict[str, Any], automatic: bool) -> None:
    """Count the optimizer steps of a checkpoint saved under the other optimization (Lightning's
    automatic, or the fast engine's manual) where this one's global_step reads them: each counts
    its own, and global_step reads the module's alone. The counter that lags takes the other's.

    Missing: a global_step that a checkpoint keeps whichever optimization took the steps."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    try:
        manual = loop["epoch_loop.manual_optimization.optim_step_progress"]
        automatic_step = loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    except KeyError:
        return  # no training state: a checkpoint for weights alone
    ours, theirs = (automatic_step, manual) if automatic else (manual, automatic_step)
    if theirs["total"]["completed"] > ours["total"]["completed"]:
        ours["total"] = dict(theirs["total"])
        ours["current"] = dict(theirs["current"])


def detects_anomalies(trainer: "L.Trainer") -> bool:
    """Whether the fit will run under autograd's anomaly mode (Trainer(detect_anomaly=True)), which
    the Trainer turns on only once its loops start, after the module's setup.

    Missing: a public property of the Trainer's detect_anomaly argument."""
    return bool(trainer._detect_anomaly)


def command_of_further_ranks(overrides: list[str]) -> None:
    """Make the command line that Lightning's DDP runs again for each further rank this job's
    `overrides` alone (the caller restores sys.argv afterwards).

    Missing: a public way to give Lightning's subprocess launcher a rank's command. Under Hydra it
    builds it from sys.argv (lightning.fabric.strategies.launchers.subprocess_script's
    `_hydra_subprocess_cmd`), adding hydra.run.dir: in a sweep, sys.argv is the whole sweep."""
    sys.argv[1:] = overrides


# Lightning's notices that tell a user nothing to do, by logger and how the message starts: the
# machine's accelerators (the run's log says which device it trains on), its advertisement, and
# the MLflow store and experiment that each run creates for itself. Missing: a setting to silence
# them; matched by text, a notice whose text moves shows again (tests/lit/test_console.py).
NOTICES = {
    "lightning.pytorch.utilities.rank_zero": ("GPU available:", "TPU available:", "💡 Tip:"),
    "lightning.pytorch.loggers.mlflow": ("Experiment with name",),
    "mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables"),
}

# (message, module) of Lightning's warnings about what mnist_lit decides, not the user.
WARNINGS = (
    # Lightning's use of a torch API that torch deprecates.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\."),
    # Nothing is logged per step: History sends one row per epoch.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", r"lightning\."),
)
