"""Seconds per training epoch: mnist_lit's own training path against a plain PyTorch loop.

Both run in this one process on the same device and data (MNIST, normalized and flattened,
resident on the device) and build the same network, loss, optimizer (Adam with Keras's
settings) and batch size from the same config, overrides included. The plain loop is what one
writes by hand: a fresh permutation per epoch, one gather per mini-batch, eager PyTorch, no
metrics, no validation. mnist_lit's time is its real `fit` path (progress bar, metrics,
validation and checkpoints included) from the start of a training epoch to the start of that
epoch's validation; on a GPU that is the captured form unless `capture=false` is given.

    MNIST_LIT_DATA=../shared/data python benchmarks/epoch_speed.py [--device cuda] [--epochs 2] [overrides ...]

Timings on a shared machine are noisy: compare the ratio, and run it twice.
"""

import argparse
import os
import statistics
import tempfile
import time

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torchvision.datasets import MNIST

import mnist_lit
from mnist_lit.nn.images import flatten, normalize

MODELS = {"logreg": "model=logreg", "mlp": "model=mlp"}


def synchronize(device: torch.device) -> None:
    """Wait for the device: its work is queued, and a clock read before it ends measures nothing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        synchronize(module.device)
        self._started = time.perf_counter()

    def on_validation_start(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            synchronize(module.device)
            self.seconds.append(time.perf_counter() - self._started)


def plain_epochs(overrides: list[str], root: str, epochs: int, device: torch.device) -> list[float]:
    """The same network, loss, optimizer and batch size as mnist_lit's config, in a hand-written loop."""
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model).to(device)
    loss_fn = instantiate(cfg.loss)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    batch_size = cfg.data.batch_size
    mnist = MNIST(root, train=True)
    images, labels = flatten(normalize(mnist.data)).to(device), mnist.targets.to(device)
    seconds = []
    for _ in range(epochs):
        synchronize(device)
        started = time.perf_counter()
        permutation = torch.randperm(len(images), device=device)
        for i in range(0, len(images), batch_size):
            batch = permutation[i : i + batch_size]
            loss = loss_fn(net(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def mnist_lit_epochs(overrides: list[str], epochs: int) -> list[float]:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        mnist_lit.fit(*overrides, f"trainer.max_epochs={epochs}", output_dir=output_dir, callbacks=[timer])
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per run, after one warm-up epoch")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("overrides", nargs="*", help="mnist_lit overrides, e.g. loss=sparse data.steps_per_execution=1")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both train")
    args = parser.parse_args()
    device = torch.device(args.device)
    accelerator = {"cpu": "cpu", "cuda": "gpu"}[args.device]
    root = os.environ.get("MNIST_LIT_DATA")
    if not root:
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")

    rows = []
    for name in args.models:
        plain, ours = [], []
        # Alternate, and drop each run's first epoch: the first seconds of a process run slow
        # (thread pools, page faults), which would otherwise favour whichever runs second.
        overrides = [MODELS[name], f"trainer.accelerator={accelerator}", *args.overrides]
        for _ in range(args.rounds):
            plain += plain_epochs(overrides, root, args.epochs + 1, device)[1:]
            ours += mnist_lit_epochs(overrides, args.epochs + 1)[1:]
        rows.append((name, statistics.median(plain), statistics.median(ours)))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\n{where}, torch {torch.__version__}, overrides {args.overrides or 'none'}, "
        f"median of {args.rounds} x {args.epochs} epochs"
    )
    print(f"{'network':8} {'plain loop s/epoch':>18} {'mnist_lit s/epoch':>18} {'ratio':>6}")
    for name, plain, ours in rows:
        print(f"{name:8} {plain:18.3f} {ours:18.3f} {ours / plain:6.2f}")


if __name__ == "__main__":
    main()
