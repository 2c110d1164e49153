"""Bad input, crashes and concurrency: a clear message or a clean recovery, never a lost run."""

import errno
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from matplotlib.figure import Figure
from torchvision.datasets import MNIST

from mnist_lit import fit
from mnist_lit.common.errors import ConfigError, DataError
from mnist_lit.common.files import WriteError
from mnist_lit.config.checks import validate
from mnist_lit.lit.data import FILES
from mnist_lit.lit.module import Diverged
from mnist_lit.lit.saving import newest
from mnist_lit.runs import train
from tests.conftest import cli, exit_of, in_process, last_weights, make_mnist

QUIET = ("trainer.enable_progress_bar=false", "data.steps_per_execution=4")


BAD_OVERRIDES = [
    ("model=cnn", "model=cnn is not an option; choose one of: model=logreg, model=mlp"),
    ("hydra/launcher=rq", "hydra/launcher=rq is not an option; choose one of: hydra/launcher=basic"),
    (
        "model.hiden=[10]",
        "model.hiden is not a setting: did you mean model.hidden? Settings of model: hidden, activation, init",
    ),
    (
        "trainer.max_epochs=ten",
        "trainer.max_epochs=ten: Value 'ten' of type 'str' could not be converted to Integer",
    ),
    ("optimizer.lr=0", "optimizer.lr=0.0 is out of range: it must be > 0 and finite, e.g. optimizer.lr=1e-3"),
    (
        "trainer.gradient_clip_vall=1",
        "trainer.gradient_clip_vall is not a setting: did you mean trainer.gradient_clip_val?",
    ),
    ("trainer.logger=true", "trainer.logger is mnist_lit's to set: choose one with logger=tensorboard"),
    ("trainer.callbacks=[]", "trainer.callbacks is mnist_lit's to set: give them to fit(..., callbacks=[...])"),
    (
        "trainer.accelerator=gpu",
        "trainer.accelerator=gpu: no GPU found here; use trainer.accelerator=cpu (or auto)",
    ),
    ("trainer.devices=4096", "trainer.devices=4096 CPU processes on "),
    ("+foo=1", "foo is not a setting: Settings: model, loss"),
    ("logger=true", "Hydra cannot compose the config (Config group override must be a string or a list. Got bool)"),
]


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES)
def test_bad_overrides_end_in_one_line_naming_the_fix(override, message, tiny_env, monkeypatch):
    line = in_process("__main__", [override], monkeypatch)
    assert line is not None and "\n" not in line and line.startswith(message), line
    assert not list(tiny_env.glob("outputs/*/*/metrics.csv"))


# The first four as the process itself prints them, one line on stderr and nothing else: Hydra's
# refusals and OmegaConf's, answered before torch is imported.
@pytest.mark.slow
@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES[:4])
def test_bad_overrides_end_the_process_in_one_line(override, message, tiny_mnist, tmp_path):
    done = cli([override], tmp_path, tiny_mnist)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not list(tmp_path.glob("outputs/*/*/metrics.csv"))


# The bad settings whose line a config check gives (the command line prints it as it is, as the
# table above shows for optimizer.lr=0), checked in this process: each a subprocess would take seconds.
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=inf", "optimizer.lr=inf is out of range: it must be > 0 and finite"),
        ("optimizer.betas=[2,3]", "optimizer.betas=[2.0, 3.0] is out of range: two numbers, each in [0, 1)"),
        ("optimizer.betas=[0.9]", "optimizer.betas=[0.9] is out of range: two numbers, each in [0, 1)"),
        ("optimizer.eps=-1", "optimizer.eps=-1.0 is out of range: it must be > 0 and finite"),
        (
            "trainer.accelerator=tpu",
            "trainer.accelerator=tpu is not supported; choose one of: auto, cpu, gpu, cuda, mps",
        ),
        ("trainer.devices=0", "trainer.devices=0 is not a number of devices: give one ≥ 1"),
        ("trainer.devices=-1", "trainer.devices=-1 names GPUs, and this run trains on the CPU"),
        ("trainer.devices=[0,1]", "trainer.devices=[0, 1] names GPUs, and this run trains on the CPU"),
        ("trainer.max_time=forever", "trainer.max_time=forever is not a duration: give days:hours:minutes:seconds"),
        ("seed=-1", "seed=-1 is out of range: a seed is in [0, 2**32 - 1]"),
        ("seed=4294967296", "seed=4294967296 is out of range: a seed is in [0, 2**32 - 1]"),
        ("+seeed=1", "seeed is not a setting: did you mean seed?"),
        ("+trainer.foo=1", "trainer.foo is not a setting: Settings of trainer: accelerator"),
        ("+model.widht=1", "model.widht is not a setting: Settings of model: hidden, activation, init"),
        ("loss._target_=os.system", "loss._target_=os.system is not one of mnist_lit's losses"),
        ("optimizer._partial_=false", "optimizer._partial_=False: mnist_lit builds its objects itself"),
        ("trainer.max_time={days:1,hour:2}", "trainer.max_time={'days': 1, 'hour': 2} is not a duration"),
        ("model.hidden=[0]", "model.hidden=[0]: every width must be ≥ 1"),
        ("model.hidden=[-5]", "model.hidden=[-5]: every width must be ≥ 1"),
        ("data.batch_size=0", "data.batch_size=0 is out of range: it must be ≥ 1, e.g. data.batch_size=32"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: it must be ≥ 1, e.g. trainer.max_epochs=10"),
        ("model.activation=relux", "model.activation=relux is unknown; choose one of: celu, elu, gelu"),
        ("threads=two", "threads=two is not a number of threads: give one ≥ 1, e.g. threads=2, or threads=auto"),
        (
            "trainer.strategy=fsdp",
            "trainer.strategy=fsdp is not supported: mnist_lit spreads a run over devices with",
        ),
        ("trainer.max_steps=0", "trainer.max_steps=0 is out of range: it must be ≥ 1, e.g. trainer.max_steps=1000"),
        (
            "early_stopping.monitor=val_acc",
            "early_stopping.monitor=val_acc is not a metric; choose one of: loss, accuracy",
        ),
        (
            "early_stopping.patience=-1",
            "early_stopping.patience=-1 is out of range: it must be ≥ 0, e.g. early_stopping.patience=3",
        ),
        ("trainer.barebones=true", "trainer.barebones=true turns off the logging that mnist_lit's history"),
        ("engine=turbo", "engine=turbo is unknown; choose one of: auto, lightning, fast"),
        (
            "objective=val_acc",
            "objective=val_acc is not a metric; choose one of: loss, accuracy, val_loss, val_accuracy",
        ),
        ("trainer.gradient_clip_algorithm=max", "trainer.gradient_clip_algorithm=max is unknown; choose norm or value"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is out of range: a fraction is between"),
        ("optimizer.lr=nan", "optimizer.lr=nan is out of range: it must be > 0 and finite"),
        ("trainer.num_nodes=0", "trainer.num_nodes=0 is out of range: it must be ≥ 1, e.g. trainer.num_nodes=2"),
        ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 is out of range: it must be ≥ 1"),
        ("trainer.min_epochs=-3", "trainer.min_epochs=-3 is out of range: it must be ≥ 0"),
        ("trainer.min_epochs=20", "trainer.min_epochs=20 is more than trainer.max_epochs=10"),
        ("trainer.precision=64", "trainer.precision=64 is not supported; choose one of: 32-true, 32, bf16-mixed"),
        ("trainer.val_check_interval=0.0", "trainer.val_check_interval=0.0 is out of range: give a fraction"),
        ("trainer.profiler=fancy", "trainer.profiler=fancy is not one of Lightning's profilers"),
        ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val=nan is out of range: it must be a finite number"),
        ("early_stopping.min_delta=-1", "early_stopping.min_delta=-1.0 is out of range: it must be ≥ 0"),
        ("threads=100000", "threads=100000 is out of range: at most 1024"),
        ("logger={a:1}", "logger={'a': 1} is not one of the logger group's options"),
        (
            "trainer.limit_val_batches=0 early_stopping.patience=1",
            "early_stopping.monitor=val_loss with trainer.limit_val_batches=0: nothing is validated to watch",
        ),
        ("trainer.devices=auto", None),
        ("trainer.max_time=00:01:30:00", None),
        ("trainer.max_time={hours:1}", None),
        ("optimizer.betas=[0,0.5]", None),
    ],
)
def test_every_bad_setting_is_one_line_naming_the_key(override, message):
    from mnist_lit.config.checks import check_machine

    def settle() -> None:
        with initialize_config_module("mnist_lit.conf", version_base="1.3"):
            cfg = compose("config", overrides=override.split())
        validate(cfg)
        check_machine(cfg, gpus=0, cores=2)

    if message is None:
        settle()
        return
    with pytest.raises(ConfigError) as error:
        settle()
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_what_lightning_still_refuses_is_one_line_naming_the_changed_keys(tiny_env):
    # The checks let mps through wherever no CUDA GPU is found; Lightning's Trainer refuses it off a Mac.
    with pytest.raises(ConfigError) as error:
        fit(*QUIET, "trainer.accelerator=mps", output_dir="run")
    line = str(error.value)
    assert line.startswith("Lightning's Trainer refuses trainer.accelerator=mps trainer.enable_progress_bar=False: ")
    assert "MPSAccelerator" in line and "\n" not in line


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback(tiny_mnist, tmp_path):
    env_done = subprocess.run(
        [sys.executable, "-m", "mnist_lit", "optimizer.lr=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MNIST_LIT_DATA": str(tiny_mnist), "HYDRA_FULL_ERROR": "1"},
        timeout=300,
    )
    assert env_done.returncode != 0 and "Traceback" in env_done.stderr and "ConfigError" in env_done.stderr


@pytest.fixture
def refused_download(monkeypatch):
    """No network: torchvision's mirrors point at a closed local port."""
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def test_missing_data_without_network_says_where_to_put_which_files(tmp_path, refused_download):
    root = tmp_path / "empty"
    with pytest.raises(DataError) as error:
        fit(*QUIET, f"data.root={root}", output_dir=tmp_path / "run")
    message = str(error.value)
    assert f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded" in message
    assert all(name in message for pair in FILES.values() for name in pair)
    assert "MNIST_LIT_DATA" in message and "\n" not in message


@pytest.mark.ddp
def test_missing_data_under_ddp_is_one_line_before_the_ranks_start(tmp_path, refused_download):
    root = tmp_path / "empty"
    with pytest.raises(DataError, match=f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded"):
        fit(*QUIET, "trainer.devices=2", "trainer.strategy=ddp", f"data.root={root}", output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_a_data_root_that_cannot_be_written_is_named(tmp_path, refused_download):
    (tmp_path / "file").write_text("not a directory")
    root = tmp_path / "file" / "data"
    with pytest.raises(DataError, match=f"data.root={root} is not writable .* MNIST must be downloaded into it"):
        fit(*QUIET, f"data.root={root}", output_dir=tmp_path / "run")


def damaged_copy(tiny_mnist, tmp_path, name, damage):
    root = tmp_path / "damaged"
    shutil.copytree(tiny_mnist, root)
    path = root / "MNIST" / "raw" / name
    data = bytearray(path.read_bytes())
    path.write_bytes(damage(data))
    return root, path


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("train-images-idx3-ubyte", lambda d: d[: len(d) // 2], "is truncated"),
        ("t10k-images-idx3-ubyte", lambda d: b"\x00\x00\x08\x01" + d[4:], "is not an IDX file of images"),
        ("train-labels-idx1-ubyte", lambda d: b"\x12\x34\x56\x78" + d[4:], "is not an IDX file of labels"),
        ("train-labels-idx1-ubyte", lambda d: d[:4] + (10**6).to_bytes(4, "big") + d[8:], "is truncated"),
        ("train-labels-idx1-ubyte", lambda d: d[:4] + (600).to_bytes(4, "big") + d[8:608], "holds 640 images but"),
        ("t10k-labels-idx1-ubyte", lambda d: d[:12] + bytes([11]) + d[13:], "holds the label 11 at item 4, where"),
    ],
)
def test_damaged_idx_files_are_named_before_training(tiny_mnist, tmp_path, name, damage, message):
    root, path = damaged_copy(tiny_mnist, tmp_path, name, damage)
    with pytest.raises(DataError, match=message) as error:
        fit(*QUIET, f"data.root={root}", output_dir=tmp_path / "run")
    assert str(path) in str(error.value) and "delete the damaged file" in str(error.value)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_resuming_another_architecture_names_the_shapes(tiny_env):
    fit(*QUIET, "model=mlp", "trainer.max_epochs=1", output_dir="mlp")
    with pytest.raises(ConfigError) as error:
        fit(*QUIET, "model=mlp", "model.hidden=[64]", "resume=mlp", output_dir="other")
    message = str(error.value)
    assert message.startswith("resume=mlp holds a network with model.hidden=[100], this run builds model.hidden=[64]")
    assert "dense_1.weight (100, 784) there, (64, 784) here" in message
    assert message.endswith("Resume with model.hidden=[100]")


@pytest.mark.parametrize("kind", ["missing", "not a checkpoint"])
def test_resuming_from_something_that_is_no_checkpoint(tiny_env, kind):
    path = tiny_env / "notes.txt"
    if kind == "not a checkpoint":
        path.write_text("hello")
    with pytest.raises(ConfigError) as error:
        fit(*QUIET, f"resume={path}", output_dir="run")
    expected = "no such checkpoint" if kind == "missing" else "is not a mnist_lit checkpoint"
    assert str(error.value).startswith(f"resume={path}") and expected in str(error.value)


def test_a_diverging_run_stops_at_once_and_marks_no_nan_checkpoint_best(tiny_env):
    with pytest.raises(
        Diverged, match=r"The loss became nan at epoch 1, mini-batch \d+: lower optimizer.lr \(now 1e\+30\)"
    ):
        fit(*QUIET, "model=mlp", "optimizer.lr=1e30", output_dir="run")
    assert not list((tiny_env / "run").glob("checkpoints/best-*"))


def test_checkpoints_hold_only_plain_data(tiny_env):
    fit(*QUIET, "trainer.max_epochs=1", output_dir="run")
    for checkpoint in (tiny_env / "run" / "checkpoints").iterdir():
        loaded = torch.load(checkpoint, weights_only=True)  # refuses anything that could run code
        assert loaded["hyper_parameters"]["model"]["hidden"] == []


# Runs mnist_lit, holding it inside the write of its second epoch's last.ckpt (after the bytes are
# written, before the rename) and saying so with a file, so that a kill lands there for certain.
HELD_IN_A_CHECKPOINT_WRITE = """
import os, runpy, sys, time
from pathlib import Path

fsync = os.fsync

def held(fd):
    fsync(fd)
    epochs = Path("run/metrics.csv").read_text().count("\\n") - 1 if Path("run/metrics.csv").exists() else 0
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".last.ckpt.partial") and epochs >= 2:
        Path("in-write").touch()
        time.sleep(600)

os.fsync = held
runpy.run_module("mnist_lit", run_name="__main__")
"""


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_the_last_whole_one_to_resume_from(tiny_mnist, tmp_path):
    args = ["model=mlp", "trainer.max_epochs=1000", "data.steps_per_execution=4", "hydra.run.dir=run", QUIET[0]]
    env = {**os.environ, "MNIST_LIT_DATA": str(tiny_mnist)}
    process = subprocess.Popen(
        [sys.executable, "-c", HELD_IN_A_CHECKPOINT_WRITE, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "in-write").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / ".last.ckpt.partial").exists()  # the kill landed inside the write
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0  # the first epoch's, whole
    done = cli(
        [
            "model=mlp",
            "trainer.max_epochs=2",
            "data.steps_per_execution=4",
            "resume=run",
            QUIET[0],
            "hydra.run.dir=resumed",
        ],
        tmp_path,
        tiny_mnist,
    )
    assert done.returncode == 0, done.stderr
    assert "Epoch 2/2" in done.stdout and (tmp_path / "resumed" / "metrics.csv").read_text().count("\n") == 3


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_four_jobs_on_one_empty_root_download_once(tmp_path):
    source = make_mnist(tmp_path / "source")
    served = tmp_path / "served"
    served.mkdir()
    resources = []
    for pair in FILES.values():
        for name in pair:
            archive = served / f"{name}.gz"
            archive.write_bytes(gzip.compress((source / "MNIST" / "raw" / name).read_bytes()))
            resources.append([archive.name, hashlib.md5(archive.read_bytes()).hexdigest()])
    handler = lambda *a, **k: CountingHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    job = (
        "import json, sys\n"
        "from torchvision.datasets import MNIST\n"
        "MNIST.mirrors, MNIST.resources = [sys.argv[1]], [tuple(r) for r in json.loads(sys.argv[2])]\n"
        "from mnist_lit.lit.data import MNISTDataModule\n"
        "dm = MNISTDataModule(sys.argv[3]); dm.prepare_data(); dm.setup('fit')\n"
        "print(len(dm.train), len(dm.test), float(dm.train.tensors[0].sum()))\n"
    )
    root = tmp_path / "root"
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        jobs = [
            subprocess.Popen(
                [sys.executable, "-c", job, url, json.dumps(resources), str(root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [j.communicate(timeout=300) for j in jobs]
    finally:
        server.shutdown()
    assert all(j.returncode == 0 for j in jobs), [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1 and outputs[0][0].startswith("640 160 ")
    # One download in all: torchvision GETs each file twice (a redirect probe, then the file).
    assert Counter(CountingHandler.requests) == {f"/{name}": 2 for name, _ in resources}
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir() if not p.name.startswith(".")) == sorted(
        name for pair in FILES.values() for name in pair
    )


@pytest.mark.slow
def test_damaged_data_on_the_command_line_is_one_line_and_a_failure(tiny_mnist, tmp_path):
    root, path = damaged_copy(tiny_mnist, tmp_path, "train-images-idx3-ubyte", lambda d: d[:1000])
    done = cli([f"data.root={root}"], tmp_path, tiny_mnist)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"{path} is truncated: 1000 bytes, where 640 images take 501776; "
        "delete the damaged file to download it again, or replace it with a good copy"
    )


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_says_how_to_continue_and_resumes_as_if_never_stopped(tiny_mnist, tmp_path, stop, code):
    # A list with a space and a directory with a space: the hint must paste back into a shell.
    args = ["model=mlp", "model.hidden=[16, 8]", "data.steps_per_execution=1", QUIET[0]]
    env = {**os.environ, "MNIST_LIT_DATA": str(tiny_mnist)}
    env.pop("HYDRA_FULL_ERROR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *args, "trainer.max_epochs=1000", "hydra.run.dir=stopped run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = tmp_path / "stopped run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.02)
    process.send_signal(stop)  # after the first epoch and its checkpoint
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"Stopped during epoch (\d+) of 1000: continue with (.*)", last)
    assert match, stderr
    hint = match[2]
    assert shlex.split(hint) == [
        "python",
        "-m",
        "mnist_lit",
        *args,
        "trainer.max_epochs=1000",
        f"resume={tmp_path / 'stopped run'}",
    ]
    assert (tmp_path / "stopped run" / "history.png").exists()
    epochs = int(match[1]) + 1
    # The hint as a user pastes it, to the next epoch.
    pasted = f"{shlex.quote(sys.executable)} {hint.removeprefix('python ')} hydra.run.dir=resumed".replace(
        "trainer.max_epochs=1000", f"trainer.max_epochs={epochs}"
    )
    done = subprocess.run(["bash", "-c", pasted], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = cli([*args, f"trainer.max_epochs={epochs}", "hydra.run.dir=straight"], tmp_path, tiny_mnist)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "resumed" / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()
    a, b = last_weights(tmp_path / "resumed"), last_weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)


# Where a stop lands: the callable ("module:owner.name"), and which call of it sends the signal.
PHASES = {
    "start-up": ("mnist_lit.__main__:validate", 0),
    "the first epoch": ("mnist_lit.lit.fast:FastClassifier.training_step", 0),
    # The second file: the first epoch's last.ckpt, after its best-epoch file.
    "a checkpoint being written": ("mnist_lit.lit.saving:torch.save", 1),
    # After the sanity check's two batches: the first epoch's validation.
    "validation": ("mnist_lit.lit.module:Classifier.validation_step", 2),
    "history.png, as fit ends": ("mnist_lit.reports.pictures:Picture.write", 0),
    "the test": ("mnist_lit.lit.module:Classifier.test_step", 0),
    "the test of a run that keeps no checkpoint": ("mnist_lit.lit.module:Classifier.test_step", 0),
    # After confusion_matrix.csv and .png, before mistakes.png and results.json.
    "the pictures and files": ("mnist_lit.reports.mistakes:worst", 0),
    "exit": ("mnist_lit.command_line:end_without_teardown", 0),
}
RESUMED = re.compile(r"Stopped during epoch \d+ of 2: continue with python -m mnist_lit .* resume=(.+)")
RESTART = re.compile(r"Stopped during epoch 1 of 2: no checkpoint yet: start again with python -m mnist_lit .*")
KEPT_NONE = re.compile(r"Stopped after training, which kept no checkpoint: (.+) not written; run it again")
MISSING = re.compile(
    r"Stopped after training, its checkpoints whole: (.+) not written; python -m mnist_lit.evaluate .*"
)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_stop_in_any_phase_ends_in_one_line_that_says_what_is_kept(phase, stop, tiny_env, monkeypatch, capsys):
    """The command line's main() in this process, the signal sent to it in `phase`: exit 128 + the
    signal, no traceback, no .partial file, and a last line whose claim holds."""
    import pkgutil

    from mnist_lit import command_line

    where, call = PHASES[phase]
    module, qualified = where.split(":")
    owner, _, name = qualified.rpartition(".")
    target = pkgutil.resolve_name(f"{module}:{owner}" if owner else module)
    original = (lambda: None) if target is command_line else getattr(target, name)  # end_without_teardown ends
    calls = []

    @functools.wraps(original)  # Lightning reads a step's signature
    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == call + 1:
            assert signal.getsignal(stop) not in (signal.SIG_DFL, signal.SIG_IGN), "nothing would answer it"
            signal.raise_signal(stop)
        return original(*args, **kwargs)

    if target is not command_line:
        monkeypatch.setattr(target, name, signalled)
    args = [*QUIET, "trainer.max_epochs=2", "hydra.run.dir=run"]
    if "no checkpoint" in phase:
        args.append("trainer.enable_checkpointing=false")
    code = exit_of("__main__", args, monkeypatch, end=signalled if target is command_line else lambda: None)
    err = capsys.readouterr().err
    assert calls, f"{owner}.{name} was never called: the phase moved"
    assert code == 128 + stop and "Traceback" not in err, err
    assert not list(tiny_env.rglob("*.partial"))
    line = err.strip().splitlines()[-1]
    run = tiny_env / "run"
    if phase == "start-up":
        assert line == "Stopped before its work was done: run it again"
    elif phase == "exit":
        assert line == "Stopped after its work was done: its files are complete"
    elif resumed := RESUMED.fullmatch(line):
        assert resumed[1] == str(run) and newest(run) is not None
    elif RESTART.fullmatch(line):
        assert newest(run) is None
    elif kept_none := KEPT_NONE.fullmatch(line):
        assert kept_none[1].split(", ") == [name for name in train.RUN_FILES if not (run / name).exists()]
        assert newest(run) is None
    elif missing := MISSING.fullmatch(line):
        assert missing[1].split(", ") == [name for name in train.RUN_FILES if not (run / name).exists()]
        assert newest(run) is not None
    elif line == f"Stopped after training: the run is complete in {run}":
        assert all((run / name).exists() for name in train.RUN_FILES)
    else:
        raise AssertionError(f"{phase}: {line}")


def test_the_best_checkpoint_and_a_new_learning_rate_hold_across_a_resume(tiny_env, caplog):
    caplog.set_level("INFO")
    fit(*QUIET, "model=mlp", "trainer.max_epochs=1", output_dir="first")
    (first_best,) = (tiny_env / "first" / "checkpoints").glob("best-*")
    history = fit(*QUIET, "model=mlp", "trainer.max_epochs=3", "optimizer.lr=1", "resume=first", output_dir="resumed")
    assert max(history["val_accuracy"][1:]) <= history["val_accuracy"][0]  # no epoch after the resume is better
    results = json.loads((tiny_env / "resumed" / "results.json").read_text())
    assert results["best_checkpoint"] == str(first_best) and first_best.exists()
    assert not list((tiny_env / "resumed" / "checkpoints").glob("best-*"))
    assert "Resuming with optimizer.lr=1.0 (it was 0.001)" in caplog.text
    last = torch.load(tiny_env / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("data.batch_size=16", "was trained with data.batch_size=32, this run has data.batch_size=16"),
        ("seed=7", "was trained with seed=0, this run has seed=7"),
        ("data.val_size=100", "was trained with data.val_size=0, this run has data.val_size=100"),
        ("model.activation=tanh", "was trained with model.activation=relu, this run has model.activation=tanh"),
        ("optimizer.eps=0.001", "was trained with optimizer.eps=1e-07, this run has optimizer.eps=0.001"),
        (
            "optimizer.betas=[0.8,0.9]",
            "was trained with optimizer.betas=[0.9, 0.999], this run has optimizer.betas=[0.8, 0.9]",
        ),
        (
            "loss=sparse",
            "was trained with loss._target_=mnist_lit.nn.loss.CategoricalCrossentropy, this run has "
            "loss._target_=torch.nn.CrossEntropyLoss",
        ),
        (
            "trainer.precision=bf16-mixed",
            "was trained with trainer.precision=32-true, this run has trainer.precision=bf16-mixed",
        ),
        (
            "trainer.gradient_clip_val=1",
            "was trained with trainer.gradient_clip_val=None, this run has trainer.gradient_clip_val=1.0",
        ),
        (
            "trainer.accumulate_grad_batches=2",
            "was trained with trainer.accumulate_grad_batches=1, this run has trainer.accumulate_grad_batches=2",
        ),
        (
            "trainer.limit_train_batches=3",
            "was trained with trainer.limit_train_batches=None, this run has trainer.limit_train_batches=3",
        ),
        ("data.seed=3", "was trained with data.seed=0, this run has data.seed=3"),
    ],
)
def test_a_resume_that_could_not_continue_the_same_training_is_refused(one_epoch, tiny_env, change, message):
    with pytest.raises(ConfigError) as error:
        fit(*QUIET, "model=mlp", "trainer.max_epochs=2", change, f"resume={one_epoch}", output_dir="resumed")
    assert str(error.value).startswith(f"resume={one_epoch} {message}") and "Resume with" in str(error.value)
    assert not (tiny_env / "resumed" / "metrics.csv").exists()


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, tiny_mnist) -> Path:
    """One epoch of the MLP, for the tests that only resume from it."""
    run = tmp_path_factory.mktemp("one_epoch") / "first"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
        fit(*QUIET, "model=mlp", "trainer.max_epochs=1", output_dir=run)
    return run


def test_a_resume_of_a_finished_run_leaves_a_whole_run(one_epoch, tiny_env):
    """Its training had ended: no epoch is trained, and the new directory still gets every file."""
    history = fit(*QUIET, "model=mlp", "trainer.max_epochs=1", f"resume={one_epoch}", output_dir="again")
    run = tiny_env / "again"
    assert len(history["loss"]) == 1
    assert (run / "metrics.csv").read_text() == (one_epoch / "metrics.csv").read_text()
    saved, original = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, one_epoch))
    assert saved["global_step"] == original["global_step"] == 20
    assert all(torch.equal(saved["state_dict"][k], original["state_dict"][k]) for k in original["state_dict"])
    assert all((run / name).exists() for name in train.RUN_FILES)
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["test_accuracy"] == json.loads((one_epoch / "results.json").read_text())["test_accuracy"]


def test_a_resume_may_change_the_execution_size(tiny_env):
    fit(*QUIET, "model=mlp", "trainer.max_epochs=3", output_dir="straight")
    fit(*QUIET, "model=mlp", "trainer.max_epochs=1", output_dir="first")
    fit(*QUIET, "model=mlp", "trainer.max_epochs=3", "data.steps_per_execution=7", "resume=first", output_dir="resumed")
    a, b = last_weights(tiny_env / "straight"), last_weights(tiny_env / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


class FailWritesFromEpoch2(L.Callback):
    """From the second epoch on, `target.attribute` fails with `code`, as on a full or read-only disk."""

    def __init__(self, monkeypatch, target, attribute, code):
        self.monkeypatch, self.target, self.attribute, self.code = monkeypatch, target, attribute, code

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:

            def fail(*args, **kwargs):
                raise OSError(self.code, os.strerror(self.code))

            self.monkeypatch.setattr(self.target, self.attribute, fail)


@pytest.mark.parametrize(
    ("target", "attribute", "code", "written"),
    [
        (torch, "save", errno.ENOSPC, r"checkpoints/(last|best-.*)\.ckpt"),
        (torch, "save", errno.EROFS, r"checkpoints/(last|best-.*)\.ckpt"),
        (torch, "save", errno.EACCES, r"checkpoints/(last|best-.*)\.ckpt"),
        (os, "fsync", errno.ENOSPC, r"metrics\.csv"),
        (Figure, "savefig", errno.ENOSPC, r"history\.png"),
    ],
)
def test_a_file_that_cannot_be_written_stops_the_run_in_one_line_and_spoils_nothing(
    tiny_env, monkeypatch, target, attribute, code, written
):
    failing = FailWritesFromEpoch2(monkeypatch, target, attribute, code)
    epochs = "trainer.max_epochs=1" if target is Figure else "trainer.max_epochs=3"
    if target is Figure:  # the picture is drawn at the end: fail from the start
        failing.on_train_epoch_start(type("T", (), {"current_epoch": 1})(), None)
    with pytest.raises(WriteError) as error:
        fit(*QUIET, epochs, output_dir="run", callbacks=[failing])
    message = str(error.value)
    fix = "free space on that disk" if code == errno.ENOSPC else "at a directory you can write to"
    assert re.fullmatch(
        rf"cannot write (?:{re.escape(str(tiny_env))}/)?run/{written}: {os.strerror(code)}; .*{fix}.*", message
    ), message
    monkeypatch.undo()
    assert not [p for p in (tiny_env / "run").rglob("*") if p.name.endswith(".partial")]
    if target is not Figure:
        assert torch.load(tiny_env / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


@pytest.mark.slow
def test_a_run_directory_that_cannot_be_created_is_one_line(tiny_mnist, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    for args in (["hydra.run.dir=file/run"], [f"hydra.run.dir={tmp_path}/file/run"]):
        done = cli(args, tmp_path, tiny_mnist)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("cannot create the run directory"), done.stderr
        assert "x_train" not in done.stdout


@pytest.fixture
def small_disk(tmp_path):
    """A real 2.5 MB file system, where this machine lets the test mount one: room for an MLP's
    best and last checkpoints (about 0.95 MB each, Adam's moments included), not for a third."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small file system here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_that_fills_up_for_real(tiny_env, small_disk):
    with pytest.raises(WriteError) as error:
        fit(*QUIET, "model=mlp", "trainer.max_epochs=5", output_dir=small_disk / "run")
    assert re.fullmatch(
        rf"cannot write {small_disk}/run/checkpoints/\S+\.ckpt: No space left on device; free space on that disk.*",
        str(error.value),
    )
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".partial")]
    # The second epoch's checkpoint did not fit: the first epoch's last.ckpt is whole.
    assert torch.load(small_disk / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_a_directory_in_use_is_refused_in_one_line_and_nothing_is_written_there(tiny_env, monkeypatch):
    """What another run, or sweep, holds while it runs (here this process, as another would):
    a run, fit() and a sweep into it are refused before they write anything."""
    from mnist_lit.config import directories
    from mnist_lit.config.directories import InUse

    owner = rf"\(process {os.getpid()} on \S+\): wait for it to end, or give this one another"
    try:
        directories.claim("run", "hydra.run.dir")
        with pytest.raises(InUse, match=rf"^{tiny_env}/run is in use by another run {owner} output_dir$"):
            fit(*QUIET, output_dir="run")
        message = exit_of("__main__", [*QUIET, "hydra.run.dir=run"], monkeypatch)
        assert re.fullmatch(rf"{tiny_env}/run is in use by another run {owner} hydra.run.dir", str(message))
        directories.claim("sweep", "hydra.sweep.dir")
        message = exit_of("__main__", ["-m", *QUIET, "seed=1,2", "hydra.sweep.dir=sweep"], monkeypatch)
        assert re.fullmatch(rf"{tiny_env}/sweep is in use by another run {owner} hydra.sweep.dir", str(message))
    finally:
        directories.release()
    assert [p.name for p in (tiny_env / "run").iterdir()] == [".lock"]
    assert [p.name for p in (tiny_env / "sweep").iterdir()] == [".lock"]


@pytest.mark.parametrize("state", ["full", "read-only"])
def test_a_full_disk_or_a_read_only_run_directory_is_one_line_before_any_file(state, small_disk, tiny_env, monkeypatch):
    (small_disk / "run").mkdir()
    if state == "full":
        with open(small_disk / "filler", "wb") as filler, pytest.raises(OSError, match="No space left"):
            while True:
                filler.write(bytes(2**16))
        fix, code = "free space on that disk, or point hydra.run.dir at another one", errno.ENOSPC
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        fix, code = "point hydra.run.dir at a directory you can write to", errno.EROFS
    message = exit_of("__main__", [*QUIET, f"hydra.run.dir={small_disk}/run"], monkeypatch)
    assert message == f"cannot write in {small_disk}/run: {os.strerror(code)}; {fix}"
    assert not list((small_disk / "run").iterdir())
