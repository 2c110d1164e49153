"""K networks of one shape trained side by side as one (nn/stacked.py, the engine's Batched form),
inside Lightning, for the stacked launcher.

Each network starts from its own initial weights and sees the images its run would see, in its
own seed's shuffle, so that its numbers are its run's up to float rounding. Each keeps what its run
keeps, itself, through the plain classes its run's callbacks use: its epoch metrics (torchmetrics),
its EpochRecord (the History's), its best and last checkpoints (MemberCheckpoints, as
RunCheckpoint keeps them, written by Lightning's save_checkpoint); a network whose loss stops
being a finite number fails alone, with the run's message, while the others train on.
"""

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mnist_lit.lit.fast import FastDataModule, divergence, one_optimizer, per_image
from mnist_lit.lit.history import History
from mnist_lit.lit.internals import count_optimizer_steps
from mnist_lit.lit.module import Diverged, EpochMetrics, fused
from mnist_lit.lit.pruning import pruned
from mnist_lit.lit.saving import MemberCheckpoints
from mnist_lit.nn.engine import Batched
from mnist_lit.nn.loss import image_losses
from mnist_lit.nn.stacked import StackedAdam, StackedNetwork
from mnist_lit.nn.stacked import kept as kept_networks


@dataclass
class Member:
    """One network of a stack, and what its own run would keep."""

    net: nn.Sequential  # its initial weights
    shuffle_seed: int  # data.seed: the order its run sees the images in
    hyper_parameters: dict[str, Any]  # its run's config, for its checkpoints
    history: History  # its run's, for its record and its state key; never one of the stack's callbacks
    checkpoints: MemberCheckpoints
    lr: float
    trial: Any = None  # the optuna.Trial its job runs, which it reports `objective` to each epoch
    objective: str = "val_accuracy"
    failure: Diverged | None = field(default=None)
    pruned_at: int | None = None  # the epoch its trial was pruned at, when it left the stack
    final: dict[str, torch.Tensor] | None = None  # its weights as it left the stack


class Stack(L.LightningModule):
    """Trains the networks of `members` (one depth; one optimizer setting but the learning rate)
    side by side. `timer`: the Trainer's, whose time each network's checkpoint holds as its run's."""

    def __init__(
        self,
        members: list[Member],
        optimizer: Callable[..., torch.optim.Optimizer],
        data: FastDataModule,
        timer: Timer,
    ) -> None:
        super().__init__()
        self.members = members
        self.timer = timer
        self.net = StackedNetwork([member.net for member in members])
        self.optimizer = optimizer
        self.data = data
        self.train_metrics = [EpochMetrics() for _ in members]
        self.val_metrics = [EpochMetrics() for _ in members]
        # Registered, so that they move to the training device with the stack.
        self.metrics = nn.ModuleList([*self.train_metrics, *self.val_metrics])
        self.automatic_optimization = False
        self.saving = 0  # the member whose checkpoint trainer.save_checkpoint is writing

    def setup(self, stage: str) -> None:
        self.data.trainer = self.trainer
        self.data.prepare_data()
        self.data.setup(stage)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Fused, as each network's own run steps (lit/module.py).
        made = self.optimizer(self.net.parameters(), **fused(self.device))
        # torch's Adam takes one learning rate per tensor, and each tensor holds every network.
        settings = {key: value for key, value in made.defaults.items() if key != "lr"}
        return StackedAdam(self.net.parameters(), [member.lr for member in self.members], **settings)

    def train_dataloader(self) -> DataLoader[int]:
        # Each batch the index of an execution: the step takes each network's own order of images.
        return DataLoader(range(self.data.executions), batch_size=None)  # type: ignore[arg-type]  # a range indexes as a Dataset does

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self.data.val_dataloader()

    def on_train_start(self) -> None:
        self.engine = Batched(self.net, one_optimizer(self).optimizer)

    def on_train_epoch_start(self) -> None:
        # Each network's order is the one its own run's sampler gives it this epoch.
        orders = []
        for member in self.members:
            sampler: DistributedSampler[int] = DistributedSampler(
                self.data.train, num_replicas=1, rank=0, shuffle=True, seed=member.shuffle_seed
            )
            sampler.set_epoch(self.current_epoch)
            orders.append(torch.tensor(list(sampler)))
        self.orders = torch.stack(orders).to(self.device)
        self.minibatches_done = 0
        self.started, self.validated = time.perf_counter(), False

    def training_step(self, index: int) -> None:
        images, labels = self.data.train.tensors
        order = self.data.execution(self.orders, index)
        outcome = self.engine(images, labels, order, self.data.batch_size)
        count_optimizer_steps(self.trainer, outcome.losses.shape[1])
        losses = per_image(outcome.losses, self.data.batch_size, order.shape[1])
        for k in range(len(self.members)):
            self.train_metrics[k].update(losses[k], outcome.predictions[k], outcome.labels[k])
        # One look at all the networks' losses; a network that diverged is told why on its own.
        for k in (~torch.isfinite(outcome.losses)).any(1).nonzero().flatten().tolist():
            member = self.members[k]
            if member.failure is None:
                member.failure = divergence(outcome.losses[k], self.current_epoch, self.minibatches_done, member.lr)
        self.minibatches_done += outcome.losses.shape[1]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        logits = self.net(images.expand(len(self.members), -1, -1))
        target = labels.expand(len(self.members), -1)
        losses = image_losses(logits, target)
        for k in range(len(self.members)):
            self.val_metrics[k].update(losses[k], logits[k].argmax(-1), target[k])

    def on_validation_epoch_end(self) -> None:
        self.validated = not self.trainer.sanity_checking

    def on_train_epoch_end(self) -> None:
        """Each network's epoch, recorded and checkpointed as its run's callbacks would."""
        seconds = time.perf_counter() - self.started
        for k, member in enumerate(self.members):
            named = {**self.train_metrics[k].named(), **(self.val_metrics[k].named("val_") if self.validated else {})}
            metrics = {name: metric.compute().item() for name, metric in named.items()}
            self.train_metrics[k].reset()
            self.val_metrics[k].reset()
            if member.failure is not None:
                continue
            record = member.history.record
            self.print(record.add(metrics, self.current_epoch + 1, self.trainer.max_epochs, seconds))
            saved, replaced = member.checkpoints.epoch_end(self.current_epoch, record.last())
            self.saving = k
            for path in saved:
                self.trainer.save_checkpoint(path, weights_only=False)
            if replaced:
                self.trainer.strategy.remove_checkpoint(replaced)
            # In the members' order, each decided once its epoch is kept: successive halving and
            # Hyperband decide by the order in which trials report.
            epoch = self.current_epoch + 1
            if member.trial is not None and member.objective in metrics:
                if pruned(member.trial, metrics[member.objective], epoch):
                    member.pruned_at = epoch
        self._leave([k for k, member in enumerate(self.members) if member.pruned_at is not None])

    def _leave(self, gone: list[int]) -> None:
        """The networks `gone` leave the stack with their weights (Member.final): the others go on
        as a stack of their own, its tensors, padding, Adam's moments and metrics theirs alone."""
        if not gone:
            return
        for k in gone:
            self.members[k].final = self.net.state_of(k)
        kept = [k for k in range(len(self.members)) if k not in gone]
        if not kept:
            self.trainer.should_stop = True
            return
        modules = [copy.deepcopy(self.members[k].net) for k in kept]
        lrs = [self.members[k].lr for k in kept]
        stepper = one_optimizer(self).optimizer
        assert isinstance(stepper, StackedAdam)
        self.net, optimizer = kept_networks(self.net, stepper, kept, modules, lrs)
        self.trainer.strategy.optimizers = [optimizer]
        self.engine = Batched(self.net, optimizer)
        self.members = [self.members[k] for k in kept]
        self.train_metrics = [self.train_metrics[k] for k in kept]
        self.val_metrics = [self.val_metrics[k] for k in kept]
        self.metrics = nn.ModuleList([*self.train_metrics, *self.val_metrics])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The stack's checkpoint made the one member `saving`'s run would write."""
        k, member = self.saving, self.members[self.saving]
        checkpoint["state_dict"] = {f"net.{name}": tensor for name, tensor in self.net.state_of(k).items()}
        checkpoint["hyper_parameters"] = member.hyper_parameters
        checkpoint["processes"] = 1
        optimizer = checkpoint["optimizer_states"][0]
        checkpoint["optimizer_states"] = [
            {
                "state": {
                    i: {
                        name: value if name == "step" else self.net.own(k, i, value).clone()
                        for name, value in state.items()
                    }
                    for i, state in optimizer["state"].items()
                },
                "param_groups": [{**group, "lr": member.lr} for group in optimizer["param_groups"]],
            }
        ]
        # The stack's time is each network's; the records are the network's own.
        checkpoint["callbacks"] = {
            self.timer.state_key: checkpoint["callbacks"][self.timer.state_key],
            member.history.state_key: member.history.record.state_dict(),
            **member.checkpoints.states(),
        }


@torch.no_grad()
def tested(
    nets: list[nn.Sequential], images: torch.Tensor, labels: torch.Tensor
) -> list[tuple[dict[str, float], torch.Tensor]]:
    """Each network's test metrics, and its class probabilities of the test `images`, computed as
    one stack on the images' device."""
    net = StackedNetwork(nets).to(images.device).eval()
    logits = torch.cat([net(chunk.expand(len(nets), -1, -1)) for chunk in images.split(10_000)], 1)
    outcomes = []
    for k in range(len(nets)):
        metrics = EpochMetrics().to(logits.device)
        metrics.update(image_losses(logits[k], labels), logits[k].argmax(-1), labels)
        test = {name: metric.compute().item() for name, metric in metrics.named("test_").items()}
        outcomes.append((test, logits[k].softmax(-1).float()))
    return outcomes
