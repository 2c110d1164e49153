"""The command line as users run it: a subprocess, from a directory other than the repository."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import cli

TINY = ["trainer.max_epochs=1", "data.steps_per_execution=4"]


# Runs the command line's main() on its arguments, then names the heavy modules it imported.
MAIN_THEN_MODULES = """
import sys
import mnist_lit.__main__ as main
sys.argv = ["mnist_lit", *sys.argv[1:]]
try:
    main.main()
except SystemExit as stop:
    print("exit", stop.code)
print(sorted(name for name in ("torch", "lightning", "matplotlib") if name in sys.modules))
"""


@pytest.mark.parametrize(
    ("argument", "said"),
    [
        ("--help", "== Config =="),
        ("model.activation=relux", "exit model.activation=relux is unknown; choose one of: celu"),
        ("+seeed=1", "exit seeed is not a setting: did you mean seed?"),
    ],
)
def test_help_and_bad_overrides_are_answered_without_importing_torch(tmp_path, argument, said):
    """--help and a bad override are answered at once: torch and Lightning take seconds to import."""
    done = subprocess.run(
        [sys.executable, "-c", MAIN_THEN_MODULES, argument], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert said in done.stdout, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_help_lists_the_accelerator_settings(tiny_mnist, tmp_path):
    done = cli(["--help"], tmp_path, tiny_mnist)
    assert done.returncode == 0
    assert all(key in done.stdout for key in ("threads: auto", "capture: true", "strategy: auto", "max_steps: -1"))


@pytest.mark.slow
@pytest.mark.parametrize("command", [[sys.executable, "-m", "mnist_lit"], ["mnist-lit"]])
def test_a_run_from_any_directory_writes_one_run_directory(command, tiny_mnist, tmp_path):
    if command[0] == "mnist-lit":
        command = [shutil.which("mnist-lit") or pytest.fail("the mnist-lit console script is not installed")]
    done = cli(["model=mlp", *TINY], tmp_path, tiny_mnist, command=command)
    assert done.returncode == 0, done.stderr
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs
    run_dir = runs[0]
    for name in (
        "metrics.csv",
        "history.png",
        "summary.txt",
        "results.json",
        "checkpoints/last.ckpt",
        ".hydra/config.yaml",
    ):
        assert (run_dir / name).exists(), name
    assert "Total params: 79,510" in done.stdout
    assert "Epoch 1/1 - " in done.stdout and "val_accuracy: " in done.stdout
    assert str(run_dir) in done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_bad_value_fails_before_any_work_in_one_line(tiny_mnist, tmp_path):
    done = cli(["model.activation=relux"], tmp_path, tiny_mnist)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (error,) = done.stderr.splitlines()  # one line, without Hydra's "Error executing job with overrides"
    assert error.startswith("model.activation=relux is unknown; choose one of: ") and "relu, relu6" in error
    assert not list(tmp_path.glob("outputs/*/*/*.csv"))


# A command line whose app leaves an atexit handler and unflushed output, and an object that says
# when Python's teardown reaches it.
ENDS = """
import atexit, sys, threading, time
import torch
from mnist_lit.command_line import command_line

class Kept:
    def __del__(self):
        print("torn down")
kept = Kept()
if sys.argv[1] == "thread":
    threading.Thread(target=time.sleep, args=(0.5,)).start()

def app():
    atexit.register(print, "atexit ran")
    sys.stdout.write("done ")
command_line(app)()
print("main returned")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "env", "ends_at_once"),
    [("alone", {}, True), ("alone", {"LOCAL_RANK": "1"}, False), ("thread", {}, False)],
)
def test_a_command_ends_after_its_atexit_handlers_without_teardown_unless_a_rank_or_thread_remains(
    tmp_path, case, env, ends_at_once
):
    """Python's teardown of torch and friends costs over a second: a finished command skips it, but
    never in a rank of a distributed run (its launcher's to end) or while another thread runs."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, "-c", ENDS, case], cwd=tmp_path, env={**environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done "), done.stdout
    assert "atexit ran" in done.stdout
    assert ("main returned" in done.stdout) is not ends_at_once
    if ends_at_once:
        assert "torn down" not in done.stdout
