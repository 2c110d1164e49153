"""The LightningModule: Keras's compile() + fit() for any network from network.py."""

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.errors import ConfigError, UserError
from mnist_lit.network import CLASSES

Batch = tuple[torch.Tensor, torch.Tensor]


class Diverged(UserError, ArithmeticError):
    """The training loss is no longer a finite number."""


def _metrics() -> nn.ModuleDict:
    # Keras reports epoch means over images: the mean loss and the fraction of images right.
    # nan_strategy="disable": a diverged run must show a NaN loss, not the mean of what is left.
    # It also drops update()'s weights (torchmetrics 1.9), so losses come in once per image.
    # validate_args=False: the labels come from our own data; checking them costs more than counting.
    return nn.ModuleDict({
        "loss": MeanMetric(nan_strategy="disable"),
        "accuracy": MulticlassAccuracy(CLASSES, average="micro", validate_args=False),
    })


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer = optimizer
        # Each training step runs several mini-batches (see data.py), one optimizer step each.
        self.automatic_optimization = False
        self.train_metrics, self.val_metrics, self.test_metrics = _metrics(), _metrics(), _metrics()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            raise ConfigError(
                f"trainer.devices={self.trainer.num_devices}: mnist_lit takes several optimizer steps per Lightning "
                "step, which Lightning's DDP does not synchronise yet; train on one device (trainer.devices=1)"
            )

    def on_train_epoch_start(self) -> None:
        self.minibatches_done = 0

    def training_step(self, minibatches: list[Batch]) -> None:
        # Lightning counts its optimizer's step() calls as global steps and runs its optimizer hooks
        # there; as Keras's callbacks under steps_per_execution, it sees one per training step. The
        # other mini-batches step the torch optimizer directly, and backward() is plain: Lightning's
        # wrappers cost ~20% of a logistic-regression step on a CPU.
        optimizer = self.optimizers()
        last = len(minibatches) - 1
        losses, logits = [], []
        for i, (images, labels) in enumerate(minibatches):
            output = self.net(images)
            loss = self.loss(output, labels)
            optimizer.zero_grad()
            loss.backward()
            (optimizer if i == last else optimizer.optimizer).step()
            losses.append(loss.detach())
            logits.append(output.detach())
        losses = torch.stack(losses)
        self._stop_if_diverged(losses)
        self.minibatches_done += len(minibatches)
        sizes = torch.tensor([len(labels) for _, labels in minibatches], device=self.device)
        labels = torch.cat([labels for _, labels in minibatches])
        self._update("", self.train_metrics, losses.repeat_interleave(sizes), torch.cat(logits).argmax(-1), labels)

    def _stop_if_diverged(self, losses: torch.Tensor) -> None:
        """Stop at once on a NaN or infinite loss: every later step and checkpoint would be garbage."""
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            lr = self.optimizers().optimizer.param_groups[0]["lr"]
            step = self.minibatches_done + i + 1
            raise Diverged(
                f"The loss became {losses[i].item()} at epoch {self.current_epoch + 1}, mini-batch {step}: "
                f"lower optimizer.lr (now {lr:g}) and start again"
            )

    def validation_step(self, batch: Batch) -> None:
        self._evaluate("val_", self.val_metrics, batch)

    def test_step(self, batch: Batch) -> None:
        self._evaluate("test_", self.test_metrics, batch)

    def predict_step(self, batch: Batch) -> torch.Tensor:
        return self.net(batch[0]).softmax(-1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.net.parameters())

    def _evaluate(self, prefix: str, metrics: nn.ModuleDict, batch: Batch) -> None:
        images, labels = batch
        logits = self.net(images)
        self._update(prefix, metrics, self.loss(logits, labels).expand(len(labels)), logits.argmax(-1), labels)

    def _update(self, prefix, metrics, losses, predictions, labels) -> None:
        """`losses`: each image's mini-batch mean loss, so that the epoch mean weighs every image alike."""
        metrics["loss"].update(losses)
        metrics["accuracy"].update(predictions, labels)
        self.log_dict({prefix + name: metric for name, metric in metrics.items()}, on_step=False, on_epoch=True, prog_bar=True)
