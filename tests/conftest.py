"""Tiny MNIST look-alikes written as real IDX files, so tests need neither network nor ../shared."""

import io
import logging
import os
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mnist_lit.startup import flush_denormals

# As every command sets it at its first import of torch (mnist_lit/startup.py), before torch's threads start.
flush_denormals()

REAL_DATA = os.environ.get("MNIST_LIT_DATA")
HAS_REAL_MNIST = bool(REAL_DATA) and (Path(str(REAL_DATA)) / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def needs_real_mnist(test):
    """A test that needs the real MNIST: marked mnist, and skipped with the reason where it is absent."""
    absent = pytest.mark.skipif(not HAS_REAL_MNIST, reason="set MNIST_LIT_DATA to a directory holding MNIST/raw")
    return pytest.mark.mnist(absent(test))


def real_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """The real MNIST's 10,000 test images (uint8, 28×28) and labels."""
    from torchvision.datasets import MNIST

    test = MNIST(str(REAL_DATA), train=False)
    return test.data, test.targets


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """IDX: magic (0, 0, type 0x08 = uint8, number of dimensions), big-endian sizes, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def learnable_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit k lights up row band k, and another band lights up too, dimmer as a rule but not
    always, under noise: learnable, but not to perfection. After two epochs the tests' networks
    reach a val_accuracy of about 0.75 (the MLP and the logistic regression alike), and another
    loss, learning rate or activation ends with a visibly different val_loss, so that a check of
    accuracy or loss can tell a wrong training from the right one."""
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
    distractor = (labels + torch.randint(1, 10, (n,), generator=generator)) % 10
    inks = (torch.randint(60, 256, (n,), generator=generator), torch.randint(0, 200, (n,), generator=generator))
    for k in range(10):
        for classes, ink in zip((labels, distractor), inks, strict=True):
            lit = classes == k
            band = images[lit, 2 * k + 4 : 2 * k + 6, 4:24]
            images[lit, 2 * k + 4 : 2 * k + 6, 4:24] = torch.maximum(band, ink[lit, None, None].to(torch.uint8))
    return images, labels


def make_mnist(root: Path, train: int = 640, test: int = 160, dataset: str = "MNIST") -> Path:
    """Tiny IDX files where torchvision's `dataset` (MNIST, FashionMNIST, KMNIST) reads them."""
    raw = root / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("t10k", test)):
        images, labels = learnable_images(n, generator)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def png(image) -> bytes:
    """A PIL image as a PNG file's bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def a_stroke() -> bytes:
    """A PNG of one dark vertical stroke on white: a digit any network answers for."""
    from PIL import Image

    digit = Image.new("L", (64, 64), "white")
    digit.paste(0, (28, 8, 36, 56))
    return png(digit)


def bomb() -> bytes:
    """A PNG of a few hundred bytes whose header claims 100,000 × 100,000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(10_000)))
        + chunk(b"IEND", b"")
    )


def quiet_trainer(**settings):
    """A Lightning Trainer that writes and prints nothing of its own unless `settings` ask."""
    import lightning as L

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**{**quiet, "enable_model_summary": False, **settings})


def seeded(**arguments):
    """A Classifier from the same weights, whatever ran before it in this process."""
    import lightning as L

    from mnist_lit import Classifier

    L.seed_everything(0)
    return Classifier(**arguments)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(tiny_mnist, tmp_path_factory) -> Path:
    """One tiny MLP run (2 epochs), for the tests that only read a trained run: evaluate, predict,
    load, export, serve. A test that would change it makes its own."""
    from mnist_lit import fit

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    with pytest.MonkeyPatch.context() as patch:  # puts back the MNIST_LIT_DATA that CI sets
        patch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
        fit(
            "model=mlp",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "data.steps_per_execution=4",
            output_dir=run,
        )
    return run


@pytest.fixture
def tiny_env(tiny_mnist, monkeypatch, tmp_path) -> Path:
    """MNIST_LIT_DATA at the tiny data, and the working directory (where outputs/ goes) in tmp_path."""
    monkeypatch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(args, cwd, data, command=(sys.executable, "-m", "mnist_lit")):
    """The command line as a user runs it, in `cwd`, reading MNIST from `data`."""
    env = {**os.environ, "MNIST_LIT_DATA": str(data)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def in_process(command: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    """A command's main() called in this process as its console script calls it: None when it did
    its work, else the one line it exits with. For the tests where the process is not the point
    (a subprocess imports Lightning again, seconds each); tests/test_cli.py has those where it is."""
    code = exit_of(command, args, monkeypatch)
    assert code is None or isinstance(code, str), f"exit {code!r} without a line"
    return code


def exit_of(
    command: str, args: list[str], monkeypatch: pytest.MonkeyPatch, end: Callable[[], None] = lambda: None
) -> int | str | None:
    """What a command's main(), called in this process, exits with: None when it did its work.
    `end` stands for end_without_teardown, which would end this process."""
    import importlib

    from mnist_lit import command_line

    monkeypatch.setattr(sys, "argv", [f"mnist_lit.{command}", *args])
    monkeypatch.setattr(command_line, "end_without_teardown", end)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # put back as it was afterwards
    os.environ.pop("HYDRA_FULL_ERROR")  # main() sets it for Hydra, as in its own process
    # Hydra points the root logger at the sys.stdout of the moment (capsys's, closed after the
    # test) and at the run's log file: a later test's logging must not write to either.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        importlib.import_module(f"mnist_lit.{command}").main()
    except SystemExit as stop:
        return None if stop.code == 0 else stop.code
    finally:
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return None


def multirun_in_process(args, cwd, data, monkeypatch, capsys):
    """`mnist_lit -m args` in `cwd`, reading MNIST from `data`, in this process: the basic and the
    stacked launchers run their jobs in the sweep's own process, as from the command line. The one
    line it exits with (None when every job did its work), and what it printed (capsys's)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MNIST_LIT_DATA", str(data))
    line = in_process("__main__", ["-m", *args], monkeypatch)
    return line, capsys.readouterr()


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def final_test_loss(run: Path, data: str | Path) -> float:
    """The loss of a run's last weights over all the test images, computed here in one piece."""
    from mnist_lit.lit.data import MNISTDataModule
    from mnist_lit.runs.build import restore

    module = restore(run)
    datamodule = MNISTDataModule(str(data))
    datamodule.setup("test")
    images, labels = datamodule.test.tensors
    with torch.no_grad():
        return module.loss(module.net(images), labels).item()


# CI sets this when ../shared holds the real MNIST: a test that needs it must not quietly skip.
REQUIRE_REAL_DATA = os.environ.get("MNIST_LIT_REQUIRE_REAL_DATA") == "1"
_skipped_real_data: list[str] = []


ALL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []


def use_cores(cores: list[int]) -> None:
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))


def pytest_configure(config):
    # Under pytest-xdist (-n N) each worker keeps to its own share of the cores, and so does every
    # process it starts: mnist_lit's threads=auto reads the affinity mask (runs/machine.py), as a job of a
    # parallel sweep does. Workers that each asked for every core would slow each other down.
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count and ALL_CORES:
        use_cores(ALL_CORES[int(worker.removeprefix("gw")) % len(ALL_CORES) :: int(count)] or ALL_CORES)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Two DDP ranks on the CPU need two cores (a run refuses more processes than cores): such a test
    # borrows every core while it runs.
    share = sorted(os.sched_getaffinity(0)) if ALL_CORES else []
    if "ddp" not in item.keywords or share == ALL_CORES:
        return (yield)
    use_cores(ALL_CORES)
    try:
        return (yield)
    finally:
        use_cores(share)


def pytest_collection_modifyitems(config, items):
    # The deeper property-based runs take long: only where -m asks for them (pytest -m fuzz).
    if "fuzz" not in (config.option.markexpr or ""):
        by_hand = pytest.mark.skip(reason="a deeper property-based run: pytest -m fuzz")
        for item in items:
            if "fuzz" in item.keywords:
                item.add_marker(by_hand)


def pytest_runtest_logreport(report):
    # A GPU or a browser missing is another reason to skip, which CI does not always have.
    if report.skipped and "mnist" in report.keywords and not {"gpu", "browser"} & set(report.keywords):
        _skipped_real_data.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_REAL_DATA and _skipped_real_data:
        print(f"\nThe real MNIST is there, yet these tests that need it were skipped: {', '.join(_skipped_real_data)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
