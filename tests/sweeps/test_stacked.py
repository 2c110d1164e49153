"""hydra/launcher=stacked: a sweep's jobs of one shape trained as one batched network, every job
still a job with a run's files and a run's numbers."""

import csv
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from mnist_lit import fit, load
from mnist_lit.nn.stacked import StackedNetwork
from mnist_lit.runs.stacking import Job, shape, train_stack, why_alone
from tests.conftest import cli, multirun_in_process

TINY = ["model=mlp", "trainer.max_epochs=2", "data.steps_per_execution=4"]
RUN_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "metrics.csv",
    "history.png",
    "summary.txt",
    "results.json",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "mistakes.png",
    "checkpoints/last.ckpt",
)


def metrics(job: Path) -> list[dict[str, float]]:
    with open(job / "metrics.csv") as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def logged_epochs(job: Path) -> list[str]:
    lines = (job / "mnist_lit.log").read_text().splitlines()
    return [line.split(" - ")[1] for line in lines if "] - Epoch " in line]


def summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_stacked_sweep_leaves_every_job_a_runs_files_and_numbers(tiny_mnist, tmp_path, monkeypatch, capsys):
    for name in ("stacked", "basic"):
        (tmp_path / name).mkdir()
    # Learning rates, widths and activations: each network its own, all in one stacked network.
    sweep = ["optimizer.lr=1e-3,1e-2", "model.hidden=[32],[64]", "model.activation=relu,sigmoid", *TINY]
    stacked, printed = multirun_in_process(
        [*sweep, "hydra/launcher=stacked"], tmp_path / "stacked", tiny_mnist, monkeypatch, capsys
    )
    basic, _ = multirun_in_process(sweep, tmp_path / "basic", tiny_mnist, monkeypatch, capsys)
    assert stacked is None and basic is None
    assert "Stacked 8 jobs into 1 network: #0 #1 #2 #3 #4 #5 #6 #7" in printed.out + printed.err
    [stacked_sweep], [basic_sweep] = (
        list((tmp_path / name).glob("outputs/multirun/*/*")) for name in ("stacked", "basic")
    )
    assert [job["status"] for job in summary(stacked_sweep)] == ["ok"] * 8
    for job in range(8):
        ours, theirs = stacked_sweep / str(job), basic_sweep / str(job)
        assert all((ours / name).exists() for name in RUN_FILES), job
        assert len(list((ours / "checkpoints").glob("best-*.ckpt"))) == 1
        for a, b in zip(metrics(ours), metrics(theirs), strict=True):
            # Batched and single matmuls round differently: equal to float rounding.
            assert a == pytest.approx(b, rel=1e-4)
        # Its epoch lines in its own log, as the job run alone has them.
        assert logged_epochs(ours) == logged_epochs(theirs) == ["Epoch 1/2", "Epoch 2/2"]


@pytest.mark.slow
def test_max_stack_bounds_the_networks(tiny_mnist, tmp_path, monkeypatch, capsys):
    line, printed = multirun_in_process(
        ["hydra/launcher=stacked", "hydra.launcher.max_stack=2", "seed=0,1,2", *TINY],
        tmp_path,
        tiny_mnist,
        monkeypatch,
        capsys,
    )
    assert line is None and "Stacked 3 jobs into 2 networks: #0 #1; #2" in printed.out + printed.err


def jobs(root: Path, *seeds: int, overrides=()) -> list[Job]:
    made = []
    for seed in seeds:
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, f"seed={seed}", *overrides])
        (root / str(seed)).mkdir(parents=True)
        made.append(Job(cfg, root / str(seed)))
    return made


def test_a_stacked_jobs_checkpoint_resumes_evaluates_and_predicts_as_a_runs(tiny_env):
    # Job 1 narrower than job 0, and with a learning rate of its own: its checkpoint is its own shape's.
    own = ("model.hidden=[32]", "optimizer.lr=3e-3")
    train_stack(jobs(tiny_env / "stack", 0) + jobs(tiny_env / "stack", 1, overrides=own))
    job = tiny_env / "stack" / "1"
    resumed = fit(*TINY, *own, "seed=1", "trainer.max_epochs=3", f"resume={job}", output_dir="resumed")
    alone = fit(*TINY, *own, "seed=1", "trainer.max_epochs=3", output_dir="alone")
    # The stacked job's epochs are its run's, and the resumed epoch goes on from them as the run does.
    assert [row["val_loss"] for row in metrics(job)] == pytest.approx(alone["val_loss"][:2], rel=1e-4)
    assert resumed["loss"] == pytest.approx(alone["loss"], rel=1e-4)
    assert resumed["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-4)
    images = torch.rand(5, 28, 28)
    fit(*TINY, *own, "seed=1", output_dir="two")
    assert torch.allclose(load(job).predict(images), load("two").predict(images), atol=1e-3)
    # The stack keeps each job's records itself, in the very form its run's callbacks keep them.
    [best] = [path.name for path in (job / "checkpoints").glob("best-*.ckpt")]
    assert (tiny_env / "two" / "checkpoints" / best).exists()
    for name in ("last.ckpt", best):
        ours, theirs = (callback_states(run / "checkpoints" / name) for run in (job, tiny_env / "two"))
        assert ours.keys() == theirs.keys() and len(ours) == 4
        for key, state in theirs.items():
            if key == "History":
                for metric, values in state["history"].items():
                    assert ours[key]["history"][metric] == pytest.approx(values, rel=1e-4)
            elif key != "Timer":
                assert ours[key] == state, key


def callback_states(checkpoint: Path) -> dict[str, dict]:
    """A checkpoint's callback states, its run's directory written as <run>."""
    run = str(checkpoint.parents[1])
    states = torch.load(checkpoint, weights_only=True)["callbacks"]
    return {
        key: {
            name: value.replace(run, "<run>")
            if isinstance(value, str)
            else {k.replace(run, "<run>"): v for k, v in value.items()}
            if isinstance(value, dict) and key != "History"
            else value
            for name, value in state.items()
        }
        for key, state in states.items()
    }


def test_both_losses_of_the_tutorial_train_in_one_stack_each_as_its_run(tiny_env):
    made = []
    for seed, loss in enumerate(("categorical", "sparse")):
        made += jobs(tiny_env / "stack", seed, overrides=[f"loss={loss}"])
    assert shape(made[0].cfg) == shape(made[1].cfg)
    train_stack(made)
    for seed, loss in enumerate(("categorical", "sparse")):
        alone = fit(*TINY, f"seed={seed}", f"loss={loss}", output_dir=f"alone-{seed}")
        ours = metrics(tiny_env / "stack" / str(seed))
        assert [row["val_loss"] for row in ours] == pytest.approx(alone["val_loss"], rel=1e-4)
        assert [row["loss"] for row in ours] == pytest.approx(alone["loss"], rel=1e-4)


def test_a_job_whose_loss_turns_nan_fails_alone(tiny_env, monkeypatch):
    made = StackedNetwork.__init__

    def poisoned(self, nets):
        made(self, nets)
        with torch.no_grad():
            self.stacked[0][1, 0, 0] = math.nan  # job 1's first weight

    monkeypatch.setattr(StackedNetwork, "__init__", poisoned)
    train_stack(jobs(tiny_env / "stack", 0, 1))
    failed, ok = tiny_env / "stack" / "1", tiny_env / "stack" / "0"
    assert (failed / "error.txt").read_text().startswith("Diverged: The loss became nan at epoch 1, mini-batch 1:")
    assert not (failed / "results.json").exists()
    alone = fit(*TINY, "seed=0", output_dir="alone")
    assert [row["val_accuracy"] for row in metrics(ok)] == pytest.approx(alone["val_accuracy"], abs=0.002)
    assert (ok / "results.json").exists()


def test_all_but_depth_and_the_training_settings_share_a_network():
    def key(*overrides):
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            return shape(compose("config", overrides=["model=mlp", *overrides]))

    assert key("seed=0") == key("seed=7") == key("seed=7", "model.init=torch")
    assert key("optimizer.lr=3e-3") == key("loss=sparse") == key()
    assert key("model.hidden=[64]") == key("model.activation=tanh") == key()
    assert key("model.hidden=[64,32]") != key() != key("model=logreg")
    assert key("optimizer.eps=1e-8") != key() != key("data.batch_size=64")
    # Held-out images are drawn by data.seed: one set a stack.
    held_out = "data.val_size=100"
    assert key(held_out, "seed=3") == key(held_out, "seed=3", "optimizer.lr=3e-3") != key(held_out, "seed=4")


def test_jobs_that_hold_out_images_validate_on_them_in_a_stack_as_their_runs(tiny_env):
    made = []
    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, "data.val_size=100", f"optimizer.lr={lr}"])
        (tiny_env / name).mkdir()
        made.append(Job(cfg, tiny_env / name))
    train_stack(made)
    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        alone = fit(*TINY, "data.val_size=100", f"optimizer.lr={lr}", output_dir=f"alone-{name}")
        ours = metrics(tiny_env / name)
        assert [row["val_loss"] for row in ours] == pytest.approx(alone["val_loss"], rel=1e-4)
        assert [row["loss"] for row in ours] == pytest.approx(alone["loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("alone", "reason"),
    [
        ("trainer.gradient_clip_val=1", "trainer.gradient_clip_val=1.0 is not stackable"),
        ("trainer.devices=2", "trainer.devices=2 is not stackable"),
        ("trainer.precision=bf16-mixed", "trainer.precision=bf16-mixed is not stackable"),
        ("resume=x", "it resumes a run"),
        ("loss._target_=torch.nn.MultiMarginLoss", "loss torch.nn.MultiMarginLoss is not stackable"),
        ("model.activation=rrelu", "activation rrelu is not stackable"),
        ("model.activation=prelu", "activation prelu is not stackable"),
        ("optimizer._target_=torch.optim.AdamW", None),
        ("loss=sparse", None),
        ("model.activation=sigmoid", None),
    ],
)
def test_a_stack_takes_only_jobs_it_trains_exactly_as_their_runs(alone, reason):
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        assert why_alone(compose("config", overrides=["model=mlp", "trainer.max_epochs=3"])) is None
        assert why_alone(compose("config", overrides=["model=mlp", alone])) == reason


def test_a_stacks_activations_follow_train_and_eval():
    from mnist_lit.nn.network import DenseNetwork

    stacked = StackedNetwork([DenseNetwork([8], "rrelu"), DenseNetwork([8], "rrelu")])
    stacked.eval()
    assert [layer.training for layer in stacked.activations] == [False]
    x = torch.randn(2, 5, 784)
    assert torch.equal(stacked(x), stacked(x))  # RReLU in eval mode: one fixed slope, no randomness


@pytest.mark.slow
def test_a_job_the_stack_does_not_implement_runs_alone_with_its_own_numbers(tiny_mnist, tmp_path, monkeypatch, capsys):
    """A stack once trained this sweep with cross-entropy; rrelu's random slopes take the same path
    (test_a_stack_takes_only_jobs_it_trains_exactly_as_their_runs)."""
    job = "loss._target_=torch.nn.MultiMarginLoss"
    line, printed = multirun_in_process(
        ["hydra/launcher=stacked", "seed=0,1", job, *TINY, "hydra.sweep.dir=sweep"],
        tmp_path,
        tiny_mnist,
        monkeypatch,
        capsys,
    )
    assert line is None
    assert "Job #0 runs alone: loss torch.nn.MultiMarginLoss is not stackable" in printed.out + printed.err
    assert "Stacked 2 jobs into 2 networks" in printed.out + printed.err
    for seed in (0, 1):
        alone = fit(*TINY, f"seed={seed}", job, output_dir=f"alone{seed}")
        assert [row["val_loss"] for row in metrics(tmp_path / "sweep" / str(seed))] == pytest.approx(
            alone["val_loss"], rel=5e-3
        )


@pytest.mark.slow
def test_a_stopped_stacked_sweep_says_where_its_jobs_stand_and_resumes(tiny_mnist, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    args = [
        "-m",
        "hydra/launcher=stacked",
        "seed=0,1",
        "model=mlp",
        "trainer.max_epochs=12",
        "data.steps_per_execution=1",
        "hydra.sweep.dir=sweep",
    ]
    env = {**os.environ, "MNIST_LIT_DATA": str(tiny_mnist)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *args],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    last = tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert (
        process.returncode == 130
        and stderr.strip().splitlines()[-1] == "Sweep stopped: continue with the same command and resume=sweep"
    )
    assert [job["status"] for job in summary(tmp_path / "sweep")] == ["interrupted"] * 2
    done = cli([*args, "resume=sweep"], tmp_path, tiny_mnist)
    assert done.returncode == 0, done.stderr
    assert [job["status"] for job in summary(tmp_path / "sweep")] == ["ok"] * 2
    assert [len(metrics(tmp_path / "sweep" / job)) for job in ("0", "1")] == [12, 12]
