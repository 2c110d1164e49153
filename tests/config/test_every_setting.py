"""Every setting of the typed config, given odd values as a user (or a sweep) would give them, ends in
a tiny training or in one line that names the key: never a traceback, and never a value outside the
range below taken in silence (Hypothesis draws the pairs).

The path is the command line's, in this process: Hydra composes the override, `fit` checks and
builds the run and trains, and `command_line.explain` is what turns an error into the one line the
command prints. `VALID` is the oracle: per key, the values it holds valid once composed. Keys whose
valid values need another machine, a service or files that are not here are only composed and
checked (MACHINE): a refusal must still be one line, and what passes must be valid.

The arguments of evaluate, predict, export and serve get the same: each through the command's own
main(), ending in its work (a server that would start is stopped at once) or in the line it exits with.

CI draws a fixed budget of examples from a fixed seed; `pytest -m fuzz` draws many more."""

import dataclasses
import json
import math
import typing
from typing import Any

import lightning as L
import pytest
from hydra import compose, initialize_config_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_lit import fit
from mnist_lit.command_line import explain
from mnist_lit.common.choices import ACTIVATIONS, DATASETS, ENGINES, INITS, METRICS, PRECISIONS, PROFILERS, TARGETS
from mnist_lit.config.checks import check_machine, validate
from mnist_lit.config.schema import Config
from mnist_lit.lit.module import Diverged
from mnist_lit.reports.pictures import Picture
from tests.conftest import a_stroke, free_port, in_process

# 640 tiny training images: 20 mini-batches of 32, in executions of 4.
BASE = ("trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")
TRAIN_IMAGES = 640
TEST_IMAGES = 160
BUDGET = 40
VALID_BUDGET = 30


def keys(node: type, prefix: str = "") -> list[str]:
    """Every leaf key of a typed config, as a dotted path."""
    found = []
    for field in dataclasses.fields(node):
        path = f"{prefix}{field.name}"
        kind = typing.get_type_hints(node)[field.name]
        found += keys(kind, f"{path}.") if dataclasses.is_dataclass(kind) else [path]
    return found


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(value: Any) -> bool:
    return (integer(value) or isinstance(value, float)) and math.isfinite(value)


def count(low: int, *special: Any) -> Any:
    return lambda v: any(v is s or (integer(v) and v == s) for s in special) or (integer(v) and v >= low)


def one_of(*choices: Any) -> Any:
    return lambda v: isinstance(v, (str, bool, type(None))) and v in choices


def fraction_or_count(batches: float = math.inf) -> Any:
    """A limit of a loop of `batches` mini-batches: a count, or a fraction that keeps one or none
    (Lightning refuses a fraction that leaves a loop no whole batch)."""
    return lambda v: (
        v is None or (integer(v) and v >= 0) or (isinstance(v, float) and (v == 0 or 1 / batches <= v <= 1))
    )


def duration(v: Any) -> bool:
    """DD:HH:MM:SS, or a dict of timedelta's keywords."""
    if isinstance(v, dict):
        words = {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"}
        return bool(v) and set(v) <= words and all(number(n) and n >= 0 for n in v.values())
    return v is None or (isinstance(v, str) and len(v.split(":")) == 4 and all(p.isdigit() for p in v.split(":")))


def width_list(v: Any) -> bool:
    return isinstance(v, list) and all(integer(w) and 1 <= w <= 4096 for w in v)


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def target(part: str) -> Any:
    return one_of(*TARGETS[part])


# The oracle: the values each key holds valid, as composed (OmegaConf has converted what it can).
VALID: dict[str, Any] = {
    "model._target_": target("model"),
    "model.hidden": width_list,
    "model.activation": one_of(*ACTIVATIONS),
    "model.init": one_of(*INITS),
    "loss._target_": target("loss"),
    "data._target_": target("data"),
    "data.root": lambda v: isinstance(v, str),
    "data.batch_size": count(1),
    "data.val_size": lambda v: integer(v) and 0 <= v < TRAIN_IMAGES,
    "data.steps_per_execution": count(1),
    "data.seed": lambda v: integer(v) and 0 <= v < 2**32,
    "data.dataset": one_of(*DATASETS),
    "optimizer._target_": target("optimizer"),
    "optimizer._partial_": lambda v: v is True,
    "optimizer.lr": lambda v: number(v) and v > 0,
    "optimizer.betas": lambda v: isinstance(v, list) and len(v) == 2 and all(number(b) and 0 <= b < 1 for b in v),
    "optimizer.eps": lambda v: number(v) and v > 0,
    "trainer._target_": target("trainer"),
    "trainer.accelerator": one_of("auto", "cpu"),  # no GPU here
    "trainer.strategy": one_of("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"),
    "trainer.devices": lambda v: v == "auto" or (integer(v) and 1 <= v <= 2),  # CPU processes on 2 cores
    "trainer.num_nodes": count(1),
    "trainer.precision": one_of(*PRECISIONS),
    "trainer.fast_dev_run": lambda v: boolean(v) or (integer(v) and v >= 1),
    "trainer.max_epochs": count(1, None, -1),
    "trainer.min_epochs": lambda v: v is None or (integer(v) and 0 <= v <= 1),  # BASE's max_epochs is 1
    "trainer.max_steps": count(1, -1),
    "trainer.min_steps": count(0, None),
    "trainer.max_time": duration,
    # Counted in mini-batches (Lightning's loop trains them): 20 of training an epoch, 5 of validation.
    "trainer.limit_train_batches": fraction_or_count(TRAIN_IMAGES // 32),
    "trainer.limit_val_batches": fraction_or_count(TEST_IMAGES // 32),
    "trainer.limit_test_batches": fraction_or_count(TEST_IMAGES // 32),
    "trainer.limit_predict_batches": fraction_or_count(),  # a run predicts nothing
    "trainer.overfit_batches": lambda v: v == 0 or fraction_or_count(TEST_IMAGES // 32)(v),
    # A number of mini-batches (Lightning's loop trains it), at most an epoch's 20.
    "trainer.val_check_interval": lambda v: (
        v is None or (isinstance(v, float) and 0 < v <= 1) or (integer(v) and 1 <= v <= 20)
    ),
    "trainer.check_val_every_n_epoch": count(1, None),
    "trainer.num_sanity_val_steps": count(0, None, -1),
    "trainer.log_every_n_steps": count(0, None),
    "trainer.enable_checkpointing": lambda v: v is None or boolean(v),
    "trainer.enable_progress_bar": lambda v: v is None or boolean(v),
    "trainer.enable_model_summary": lambda v: v is None or boolean(v),
    "trainer.accumulate_grad_batches": count(1),
    "trainer.gradient_clip_val": lambda v: v is None or (number(v) and v >= 0),
    "trainer.gradient_clip_algorithm": one_of(None, "norm", "value"),
    "trainer.deterministic": lambda v: v in (None, True, False, "warn"),  # 0 and 1 as false and true
    "trainer.benchmark": lambda v: v is None or boolean(v),
    "trainer.inference_mode": boolean,
    "trainer.use_distributed_sampler": boolean,
    "trainer.profiler": one_of(*PROFILERS),
    "trainer.detect_anomaly": boolean,
    "trainer.barebones": lambda v: v is False,
    "trainer.sync_batchnorm": boolean,
    "trainer.reload_dataloaders_every_n_epochs": count(0),
    "trainer.enable_autolog_hparams": boolean,
    "trainer.model_registry": lambda v: v is None or isinstance(v, str),
    "early_stopping.patience": count(0, None),
    "early_stopping.monitor": one_of(*METRICS),
    "early_stopping.mode": one_of("min", "max"),
    "early_stopping.min_delta": lambda v: number(v) and v >= 0,
    "early_stopping.restore_best_weights": boolean,
    "seed": lambda v: integer(v) and 0 <= v < 2**32,
    "resume": lambda v: v in (None, ""),  # a path: none of the drawn ones is a run ('': none)
    "threads": lambda v: v == "auto" or (integer(v) and 1 <= v <= 1024),
    "objective": one_of(*METRICS),
    "trial": lambda v: v is None,  # an Optuna sweep's job's: any other value, outside one, is refused
    "logger": lambda v: v is None,
    "capture": boolean,
    "engine": one_of(*ENGINES),
}

# Their valid values need other machines, services or files: composed and checked, never trained.
MACHINE = {"trainer.accelerator", "trainer.strategy", "trainer.devices", "trainer.num_nodes", "data.root"}
MACHINE |= {"data.dataset", "logger"}

# Odd values as the command line spells them: wrong types, 0, -1, -2, huge, NaN and inf, empty and
# odd strings, lists where a number belongs and numbers where a list does, null.
ODD = [
    "0", "-1", "-2", "1", "2", "3", "4", "8", "1000000000000", "9223372036854775808", "0.0", "0.5", "1.0",
    "1.5", "-0.5", "1e-3", "nan", "inf", "-inf", "null", "true", "false", "''", "' '", "abc", "'a b'",
    "'5'", "[]", "[1]", "[1,2]", "[0]", "[0.5,0.5]", "{a:1}", "{hours:1}", "'ü'", "auto", "'1,2'",
    "00:00:01:00", "warn", "norm", "simple", "relu", "val_loss", "max",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(ODD),
    st.integers(-(2**40), 2**40).map(str),
    # Subnormals: conftest flushes them to zero, as every command does.
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
    st.text("abcxyz019 _-.", max_size=6).map(lambda text: f"'{text}'"),
)


def test_the_oracle_covers_every_key_of_the_typed_config():
    assert set(VALID) == set(keys(Config))
    assert set(VALID_DRAWS) == set(VALID) - MACHINE


def spelled(value: Any) -> str:
    """A value as the command line spells it."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return f"[{','.join(spelled(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{spelled(v)}" for k, v in value.items()) + "}"
    return str(value)


def some(*values: Any) -> Any:
    return st.sampled_from(values)


def counts(low: int, high: int, *special: Any) -> Any:
    return st.one_of(st.integers(low, high), some(*special)) if special else st.integers(low, high)


FRACTIONS = st.floats(0.05, 1.0, allow_subnormal=False)
LIMITS = st.one_of(some(None), st.integers(0, 25), some(0.0), st.floats(0.2, 1.0, allow_subnormal=False))
# Each key's valid values, as a user may give them (no subnormal floats: conftest flushes them to
# zero, as every command does) (the oracle checks every draw, and a run's length stays bounded:
# UNBOUNDED's trainer.max_steps ends an unbounded max_epochs).
VALID_DRAWS: dict[str, Any] = {
    "model._target_": some(*TARGETS["model"]),
    "model.hidden": st.lists(st.integers(1, 64), max_size=2),
    "model.activation": some(*ACTIVATIONS),
    "model.init": some(*INITS),
    "loss._target_": some(*TARGETS["loss"]),
    "data._target_": some(*TARGETS["data"]),
    "data.batch_size": st.integers(1, 1000),
    "data.val_size": st.integers(0, TRAIN_IMAGES - 1),
    "data.steps_per_execution": st.integers(1, 50),
    "data.seed": st.integers(0, 2**32 - 1),
    "optimizer._target_": some(*TARGETS["optimizer"]),
    "optimizer._partial_": some(True),
    "optimizer.lr": st.floats(1e-6, 0.05, allow_subnormal=False),
    "optimizer.betas": st.lists(st.floats(0, 0.999, allow_subnormal=False), min_size=2, max_size=2),
    "optimizer.eps": st.floats(1e-10, 1e-3, allow_subnormal=False),
    "trainer._target_": some(*TARGETS["trainer"]),
    "trainer.precision": some(*PRECISIONS),
    "trainer.fast_dev_run": st.one_of(st.booleans(), st.integers(1, 3)),
    "trainer.max_epochs": counts(1, 2, None, -1),
    "trainer.min_epochs": some(None, 0, 1),
    "trainer.max_steps": counts(1, 40, -1),
    "trainer.min_steps": counts(0, 20, None),
    "trainer.max_time": some(None, "00:00:01:00", {"minutes": 1}, {"seconds": 30}),
    "trainer.limit_train_batches": st.one_of(LIMITS, FRACTIONS),
    "trainer.limit_val_batches": LIMITS,
    "trainer.limit_test_batches": LIMITS,
    "trainer.limit_predict_batches": LIMITS,
    "trainer.overfit_batches": st.one_of(st.integers(0, 5), some(0.0), st.floats(0.2, 1.0, allow_subnormal=False)),
    "trainer.val_check_interval": st.one_of(some(None), st.integers(1, 20), FRACTIONS),
    "trainer.check_val_every_n_epoch": counts(1, 3, None),
    "trainer.num_sanity_val_steps": counts(0, 3, None, -1),
    "trainer.log_every_n_steps": counts(0, 50, None),
    "trainer.enable_checkpointing": some(None, True, False),
    "trainer.enable_progress_bar": some(None, True, False),
    "trainer.enable_model_summary": some(None, True, False),
    "trainer.accumulate_grad_batches": some(1, 2, 3, 4, 7),
    "trainer.gradient_clip_val": st.one_of(some(None), st.floats(0, 10, allow_subnormal=False)),
    "trainer.gradient_clip_algorithm": some(None, "norm", "value"),
    "trainer.deterministic": some(None, True, False, "warn"),
    "trainer.benchmark": some(None, True, False),
    "trainer.inference_mode": st.booleans(),
    "trainer.use_distributed_sampler": st.booleans(),
    "trainer.profiler": some(*PROFILERS),
    "trainer.detect_anomaly": st.booleans(),
    "trainer.barebones": some(False),
    "trainer.sync_batchnorm": st.booleans(),
    "trainer.reload_dataloaders_every_n_epochs": st.integers(0, 3),
    "trainer.enable_autolog_hparams": st.booleans(),
    "trainer.model_registry": some(None, "digits"),
    "early_stopping.patience": counts(0, 5, None),
    "early_stopping.monitor": some(*METRICS),
    "early_stopping.mode": some("min", "max"),
    "early_stopping.min_delta": st.floats(0, 1, allow_subnormal=False),
    "early_stopping.restore_best_weights": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
    "resume": some(None, "''"),
    "threads": st.one_of(some("auto"), st.integers(1, 4)),
    "objective": some(*METRICS),
    "trial": some(None),
    "capture": st.booleans(),
    "engine": some(*ENGINES),
}


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


class StopSoon(L.Callback):
    """The harness's bound on every example: one training step, whatever the settings say."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        trainer.should_stop = True


def one_line(error: BaseException, key: str) -> str:
    line = explain(error)
    assert line is not None, f"{key}: a traceback, not a line: {error!r}"
    assert "\n" not in line and key.rpartition(".")[2] in line, line
    return line


def settle(key: str, value: str, output_dir) -> None:
    override = f"{key}={value}"
    try:
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            cfg = compose("config", overrides=[*BASE, override])
    except Exception as error:
        one_line(error, key)
        return
    composed = plain(OmegaConf.select(cfg, key))
    valid = VALID[key](composed)
    try:
        if key in MACHINE:
            validate(cfg)
            check_machine(cfg, gpus=0, cores=2)
        else:
            fit(*BASE, override, output_dir=output_dir, callbacks=[StopSoon()])
    except Diverged:
        assert valid, f"{override} (composed: {composed!r}) is out of range, yet trained"
        return  # a training, ended in one line: the loss became inf or NaN
    except Exception as error:
        line = one_line(error, key)
        assert not valid, f"{override} (composed: {composed!r}) is valid, yet refused: {line}"
        return
    assert valid, f"{override} (composed: {composed!r}) is out of range, yet taken in silence"


def every_setting(key: str, value: str, tmp_path_factory) -> None:
    settle(key, value, tmp_path_factory.mktemp("run"))


@pytest.fixture
def tiny(tiny_env, monkeypatch):
    # The pictures are not what is tested here, and drawing them is most of a tiny run's time.
    monkeypatch.setattr(Picture, "write", lambda picture: None)


_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@pytest.mark.slow
@settings(max_examples=BUDGET, derandomize=True, **_SETTINGS)
@given(key=st.sampled_from(sorted(VALID)), value=VALUES)
def test_every_setting_ends_in_a_training_or_one_line_naming_it(key, value, tiny, tmp_path_factory):
    every_setting(key, value, tmp_path_factory)


@pytest.mark.fuzz
@settings(max_examples=2000, **_SETTINGS)
@given(key=st.sampled_from(sorted(VALID)), value=VALUES)
def test_every_setting_deeply(key, value, tiny, tmp_path_factory):
    every_setting(key, value, tmp_path_factory)


# Lightning trains until max_steps where max_epochs is unbounded (-1, or null with max_steps=-1).
UNBOUNDED = ("trainer.max_steps=40",)
VALID_DRAWN = st.sampled_from(sorted(VALID_DRAWS)).flatmap(
    lambda key: st.tuples(st.just(key), VALID_DRAWS[key].map(spelled))
)


def to_its_end(key: str, value: str, output_dir) -> None:
    """A value the oracle holds valid trains, tests and leaves the run's files, pictures included."""
    override = f"{key}={value}"
    base = (*BASE, *UNBOUNDED) if key == "trainer.max_epochs" else BASE
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        composed = plain(OmegaConf.select(compose("config", overrides=[*base, override]), key))
    assert VALID[key](composed), f"{override} (composed: {composed!r}) is drawn as valid, but the oracle refuses it"
    try:
        history = fit(*base, override, output_dir=output_dir)
    except Diverged:
        return  # a training that ends in one line: its loss stopped being a number
    results = json.loads((output_dir / "results.json").read_text())
    written = ["summary.txt", "results.json"]
    written += ["metrics.csv", "history.png"] if history["loss"] else []
    written += ["confusion_matrix.csv", "confusion_matrix.png", "mistakes.png"] if results["test_accuracy"] else []
    assert all((output_dir / name).exists() for name in written), (override, written)


@pytest.mark.slow
@settings(max_examples=VALID_BUDGET, derandomize=True, **_SETTINGS)
@given(drawn=VALID_DRAWN)
def test_every_valid_value_runs_to_its_end_with_its_files(drawn, tiny_env, tmp_path_factory):
    to_its_end(*drawn, tmp_path_factory.mktemp("run"))


@pytest.mark.fuzz
@settings(max_examples=1000, **_SETTINGS)
@given(drawn=VALID_DRAWN)
def test_every_valid_value_deeply(drawn, tiny_env, tmp_path_factory):
    to_its_end(*drawn, tmp_path_factory.mktemp("run"))


# The commands that read a trained run: each argument, drawn as a user would give it, through the
# command's own main() in this process (what `python -m mnist_lit.<command>` runs).
def command_keys() -> dict[str, list[str]]:
    from mnist_lit.config.schema import EvaluateConfig, ExportConfig, PredictConfig, ServeConfig

    schemas = {"evaluate": EvaluateConfig, "predict": PredictConfig, "export": ExportConfig, "serve": ServeConfig}
    return {command: keys(schema) for command, schema in schemas.items()}


COMMAND_KEYS = command_keys()


def command_oracle(key: str, value: Any, given: dict[str, str]) -> bool | None:
    """Whether a command's composed argument is valid; None: judged only on its refusal (this
    machine's ports and host names, another data root)."""
    if key == "checkpoint":
        return value == given["checkpoint"]
    if key == "images":
        return True if value == given["images"] else None  # another file or folder may hold images too
    if key == "split":
        return value in ("test", "val")
    if key == "format":
        return value in ("onnx", "pt2")
    return None  # port, host, data.root


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    """A tiny run, and an image file of a digit, for the commands to read."""
    directory = tmp_path_factory.mktemp("commands")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
        fit(*BASE, output_dir=directory / "run")
    (directory / "digit.png").write_bytes(a_stroke())
    return directory


COMMAND_ARGUMENTS = st.sampled_from([(command, key) for command, keys in COMMAND_KEYS.items() for key in keys])


@pytest.mark.slow
@settings(max_examples=40, derandomize=True, **_SETTINGS)
@given(command_key=COMMAND_ARGUMENTS, value=VALUES)
def test_every_argument_of_the_commands_ends_in_their_work_or_one_line(
    command_key, value, trained, tiny_mnist, monkeypatch, tmp_path
):
    every_argument(*command_key, value, trained, tiny_mnist, monkeypatch, tmp_path)


@pytest.mark.fuzz
@settings(max_examples=1000, **_SETTINGS)
@given(command_key=COMMAND_ARGUMENTS, value=VALUES)
def test_every_argument_of_the_commands_deeply(command_key, value, trained, tiny_mnist, monkeypatch, tmp_path):
    every_argument(*command_key, value, trained, tiny_mnist, monkeypatch, tmp_path)


def every_argument(command, key, value, trained, tiny_mnist, monkeypatch, tmp_path):
    import uvicorn
    from torchvision.datasets import MNIST

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: [s.close() for s in sockets])  # served
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # no downloads
    given_args = {"checkpoint": str(trained / "run"), "images": str(trained / "digit.png"), "format": "pt2"}
    given_args["port"] = str(free_port())
    base = {name: given_args[name] for name in COMMAND_KEYS[command] if name in given_args}
    override = f"{key}={value}"
    line = in_process(command, [*(f"{name}={arg}" for name, arg in base.items()), override], monkeypatch)
    try:
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            composed = plain(OmegaConf.select(compose(command, overrides=[override]), key))
    except Exception:
        composed = None  # Hydra refused it: the command's line must say so
        assert line is not None, f"{command} {override}: Hydra refuses it, yet the command went on"
    if line is not None:
        assert "\n" not in line and key.rpartition(".")[2] in line, f"{command} {override}: {line}"
        assert command_oracle(key, composed, base) is not True, f"{command} {override} is valid, yet: {line}"
    else:
        assert command_oracle(key, composed, base) is not False, f"{command} {override} taken in silence"
