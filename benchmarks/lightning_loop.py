"""The Classifier in Lightning's own loop against the smallest LightningModule a user would write for
the same network: a Linear stack, cross-entropy, Adam with Keras's lr and eps, and the same four
metrics logged per epoch through `self.log` (torchmetrics' mean loss and accuracy). Both train in
the same Trainer settings on the same MNISTDataModule, in one process, taking turns; each figure is
the median of the training epochs (from an epoch's start to its validation's).

    MNIST_LIT_DATA=../shared/data python benchmarks/lightning_loop.py [--models logreg mlp] [--epochs 3] [--turns 2]

The ratio Classifier / minimal is what the Classifier's own bookkeeping costs in Lightning's loop.
Timings on a shared machine are noisy: run it alone, and twice.
"""

import argparse
import os
import statistics
import time

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit import Classifier
from mnist_lit.lit.data import MNISTDataModule

HIDDEN = {"logreg": [], "mlp": [100]}


class Minimal(L.LightningModule):
    def __init__(self, hidden: list[int]) -> None:
        super().__init__()
        widths = [784, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
        self.metrics = nn.ModuleDict(
            {
                f"{stage}{name}": metric
                for stage in ("", "val_")
                for name, metric in (("loss", MeanMetric()), ("accuracy", MulticlassAccuracy(10, average="micro")))
            }
        )

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x.flatten(1))
        loss = nn.functional.cross_entropy(logits, y)
        self.metrics[f"{prefix}loss"](loss.detach())
        self.metrics[f"{prefix}accuracy"](logits.detach().argmax(-1), y)
        self.log_dict({f"{prefix}{name}": self.metrics[f"{prefix}{name}"] for name in ("loss", "accuracy")})
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.step(batch, "")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.step(batch, "val_")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3, eps=1e-7)


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self.started)


def epochs_of(module: L.LightningModule, root: str, epochs: int) -> list[float]:
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, MNISTDataModule(root))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(HIDDEN), choices=HIDDEN)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=2, help="runs of each module, taking turns")
    args = parser.parse_args()
    root = os.environ.get("MNIST_LIT_DATA")
    if not root:
        raise SystemExit("Set MNIST_LIT_DATA to a directory holding MNIST/raw (e.g. ../shared/data).")
    print(f"CPU ({os.cpu_count()} cores), torch {torch.__version__}, lightning {L.__version__}")
    print("network | minimal LightningModule | Classifier | ratio")
    for name in args.models:
        seconds: dict[str, list[float]] = {"minimal": [], "classifier": []}
        for _ in range(args.turns):
            seconds["minimal"] += epochs_of(Minimal(HIDDEN[name]), root, args.epochs)
            seconds["classifier"] += epochs_of(Classifier(hidden=HIDDEN[name]), root, args.epochs)
        minimal, ours = (statistics.median(seconds[key]) for key in ("minimal", "classifier"))
        print(f"{name} | {minimal:.2f} s | {ours:.2f} s | {ours / minimal:.2f}")


if __name__ == "__main__":
    main()
