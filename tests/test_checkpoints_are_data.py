"""A checkpoint is data: loading one through any entry point calls nothing that the file names.

Each poisoned checkpoint below would create a file in `marker` if anything it names were called
(through Hydra's instantiate or an OmegaConf resolver); each entry point refuses it in one line."""

import io
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import mnist_lit
from mnist_lit import Classifier, fit
from mnist_lit.common.errors import ConfigError
from mnist_lit.evaluate import evaluate
from tests.conftest import cli

TINY = ("trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")


def _loss_is_a_function(saved: dict, marker: Path) -> None:
    # tempfile.mkstemp() creates a file in the temporary directory (TMPDIR, set to marker).
    saved["loss"]["_target_"] = "tempfile.mkstemp"


def _a_trainer_field_builds_something(saved: dict, marker: Path) -> None:
    # An Any-typed Trainer setting holding a config that Hydra's instantiate would build.
    saved["trainer"]["deterministic"] = {"_target_": "tempfile.mkstemp", "dir": str(marker)}


def _a_resolver_runs(saved: dict, marker: Path) -> None:
    # mnist_lit's own unique_dir resolver creates the directory it names when resolved.
    saved["data"]["dataset"] = "${unique_dir:" + str(marker / "made") + "}"


def _an_unknown_key_builds_something(saved: dict, marker: Path) -> None:
    saved["callbacks"] = [{"_target_": "tempfile.mkstemp", "dir": str(marker)}]


POISONS = {
    "loss": (_loss_is_a_function, "loss._target_=tempfile.mkstemp is not one of mnist_lit's losses; choose one of:"),
    "trainer": (
        _a_trainer_field_builds_something,
        "trainer.deterministic._target_=tempfile.mkstemp: mnist_lit builds nothing from trainer.deterministic",
    ),
    "resolver": (_a_resolver_runs, "data.dataset=${unique_dir:"),
    "unknown": (
        _an_unknown_key_builds_something,
        "callbacks[0]._target_=tempfile.mkstemp: mnist_lit builds nothing from callbacks[0]",
    ),
}


def poisoned(tiny_run: Path, directory: Path, poison: str) -> tuple[Path, Path, str]:
    """A copy of the run's last checkpoint with `poison` in its config, the marker directory that
    stays empty unless something the poison names is called, and the expected message."""
    marker = directory / "marker"
    marker.mkdir(parents=True)
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    make, message = POISONS[poison]
    make(checkpoint["hyper_parameters"], marker)
    path = directory / "poisoned.ckpt"
    torch.save(checkpoint, path)
    return path, marker, message


@pytest.fixture
def in_marker_tmp(monkeypatch):
    """tempfile's directory for this process: set to the marker once it is known."""
    return lambda marker: monkeypatch.setattr(tempfile, "tempdir", str(marker))


@pytest.mark.parametrize("poison", POISONS)
def test_load_and_load_from_checkpoint_call_nothing_a_checkpoint_names(tiny_run, tmp_path, in_marker_tmp, poison):
    path, marker, message = poisoned(tiny_run, tmp_path, poison)
    in_marker_tmp(marker)
    with pytest.raises(ConfigError) as error:
        mnist_lit.load(path)
    assert str(error.value).startswith(f"checkpoint={path}: {message}") and "\n" not in str(error.value)
    # Lightning's way reads only the network, the loss and the optimizer: only a loss that is none
    # of the known ones stops it.
    if poison == "loss":
        with pytest.raises(ConfigError, match=rf"^checkpoint={path}: loss='tempfile.mkstemp' is unknown; choose "):
            Classifier.load_from_checkpoint(path)
    else:
        assert Classifier.load_from_checkpoint(path).hparams["hidden"] == [100]
    assert list(marker.iterdir()) == []


@pytest.mark.parametrize("poison", POISONS)
def test_evaluate_and_resume_call_nothing_a_checkpoint_names(
    tiny_run, tmp_path, tiny_mnist, monkeypatch, in_marker_tmp, poison
):
    path, marker, message = poisoned(tiny_run, tmp_path, poison)
    in_marker_tmp(marker)
    with pytest.raises(ConfigError) as error:
        evaluate(str(path), "test", str(tiny_mnist), tmp_path / "evaluated")
    assert str(error.value).startswith(f"checkpoint={path}: {message}")
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        fit("model=mlp", *TINY, f"resume={path}", output_dir="resumed")
    assert str(error.value).startswith(f"resume={path}: {message}")
    assert list(marker.iterdir()) == []


@pytest.mark.slow
def test_every_command_line_refuses_a_poisoned_checkpoint_in_one_line(tiny_run, tmp_path, tiny_mnist):
    path, marker, message = poisoned(tiny_run, tmp_path, "trainer")
    digit = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(digit)
    commands = {
        "evaluate": ((sys.executable, "-m", "mnist_lit.evaluate"), [f"checkpoint={path}"], "checkpoint"),
        "predict": (
            (sys.executable, "-m", "mnist_lit.predict"),
            [f"checkpoint={path}", f"images={digit}"],
            "checkpoint",
        ),
        "resume": ((sys.executable, "-m", "mnist_lit"), ["model=mlp", *TINY, f"resume={path}"], "resume"),
    }
    for name, (command, args, key) in commands.items():
        done = cli_with_tmpdir(args, tmp_path, tiny_mnist, command, marker)
        assert done.returncode == 1, (name, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith(f"{key}={path}: {message}"), (name, done.stderr)
        assert "Traceback" not in done.stderr, (name, done.stderr)
    assert list(marker.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_resume_refuses_a_poisoned_job_checkpoint(tiny_run, tmp_path, tiny_mnist):
    args = ["-m", "model=mlp", *TINY, "seed=0", "hydra.sweep.dir=sweep"]
    assert cli(args, tmp_path, tiny_mnist).returncode == 0
    last = tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt"
    marker = tmp_path / "marker"
    marker.mkdir()
    checkpoint = torch.load(last, weights_only=True)
    _a_trainer_field_builds_something(checkpoint["hyper_parameters"], marker)
    torch.save(checkpoint, last)
    done = cli_with_tmpdir([*args, "resume=sweep"], tmp_path, tiny_mnist, (sys.executable, "-m", "mnist_lit"), marker)
    assert done.returncode == 1
    assert "mnist_lit builds nothing from trainer.deterministic" in (tmp_path / "sweep" / "0" / "error.txt").read_text()
    assert list(marker.iterdir()) == []


def cli_with_tmpdir(args, cwd, data, command, tmpdir):
    import os
    import subprocess

    env = {**os.environ, "MNIST_LIT_DATA": str(data), "TMPDIR": str(tmpdir)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_same_rule_refuses_a_composed_config(tiny_env):
    with pytest.raises(ConfigError) as error:
        fit("loss._target_=os.system", output_dir="run")
    assert str(error.value).startswith("loss._target_=os.system is not one of mnist_lit's losses; choose one of:")
    with pytest.raises(ConfigError, match=r"^optimizer._target_=torch.optim.SGD is not one of mnist_lit's optimizers"):
        fit("optimizer._target_=torch.optim.SGD", output_dir="run")


def test_a_run_trained_with_another_torch_loss_loads_back(tiny_env):
    fit("model=mlp", *TINY, "loss._target_=torch.nn.MultiMarginLoss", output_dir="margin")
    model = mnist_lit.load("margin")
    assert type(model.classifier.loss) is torch.nn.MultiMarginLoss
    assert model.predict(torch.rand(3, 28, 28)).shape == (3, 10)


def test_a_checkpoint_whose_tensors_changed_is_refused_in_one_line_by_every_reader(tiny_run, tiny_env):
    from mnist_lit.lit.saving import CHECKSUM, AtomicCheckpointIO, Damaged, checksum

    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint[CHECKSUM] == checksum(checkpoint)  # written with it
    checkpoint["state_dict"]["net.output.weight"][0, 0] += 1e-3  # a byte flipped on the disk
    damaged = tiny_env / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    said = f"{damaged} is damaged: its tensors are not those written with it (their SHA-256 differs)"
    readers = {
        "load": lambda: mnist_lit.load(damaged),
        "evaluate": lambda: evaluate(str(damaged), "test", os.environ["MNIST_LIT_DATA"], tiny_env),
        "resume": lambda: fit(*TINY, "model=mlp", "trainer.max_epochs=3", f"resume={damaged}", output_dir="resumed"),
    }
    for name, read in readers.items():
        with pytest.raises(ConfigError) as refused:
            read()
        assert said in str(refused.value) and "\n" not in str(refused.value), name
    with pytest.raises(Damaged, match="is damaged"):  # Lightning's own load, ckpt_path=
        AtomicCheckpointIO().load_checkpoint(damaged)
    with pytest.raises(Damaged, match=re.escape(said)):
        Classifier.load_from_checkpoint(damaged)


class _MakesADirectory:
    """Unpickled, it calls os.mkdir: a checkpoint that carries code, not data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_a_checkpoint_that_carries_code_is_refused_before_its_code_runs(tiny_run, tmp_path):
    from mnist_lit.lit.saving import AtomicCheckpointIO

    ran = tmp_path / "ran"
    path = tmp_path / "code.ckpt"
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    torch.save({**checkpoint, "code": _MakesADirectory(ran)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)  # Lightning's own load, ckpt_path=
    with pytest.raises(Exception, match="Weights only load failed"):
        Classifier.load_from_checkpoint(path)
    assert not ran.exists()
    assert "state_dict" in AtomicCheckpointIO().load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")


def test_load_from_checkpoint_honours_or_refuses_lightnings_arguments(tiny_run):
    module = Classifier.load_from_checkpoint(tiny_run, map_location="cpu", strict=True, lr=0.5)
    assert module.lr == 0.5 and module.hparams["lr"] == 0.5 and module.hparams["hidden"] == [100]
    assert Classifier.load_from_checkpoint(tiny_run).lr == 1e-3
    with pytest.raises(ConfigError, match=r"^weights_only=False: mnist_lit reads checkpoints as data only"):
        Classifier.load_from_checkpoint(tiny_run, weights_only=False)
    with pytest.raises(ConfigError, match=r"^checkpoint=.*: loss='os.system' is unknown; choose one of: categorical"):
        Classifier.load_from_checkpoint(tiny_run, loss="os.system")
    with pytest.raises(ConfigError, match=r"^nonsense, other: not an argument of Classifier; its arguments: hidden, "):
        Classifier.load_from_checkpoint(tiny_run, nonsense=1, other=2)
    with pytest.raises(ConfigError, match=r"^checkpoint=absent.ckpt: no such checkpoint; give a run directory"):
        Classifier.load_from_checkpoint("absent.ckpt")
    # Lightning's load_from_checkpoint also reads an open file.
    opened = io.BytesIO((tiny_run / "checkpoints" / "last.ckpt").read_bytes())
    assert Classifier.load_from_checkpoint(opened).hparams["hidden"] == [100]
