"""The fast engine: the Classifier trained Keras's way, `steps_per_execution` mini-batches per
Lightning step (nn/engine.py's executions), captured as CUDA graphs on a GPU. Lightning's own loop
trains the plain Classifier (lit/module.py); this subclass, and FastDataModule's executions, are
chosen when the run is built, because Lightning refuses a manual optimization's settings before
`setup` runs. The one module of the Lightning layer that knows what an execution is."""

from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, Dataset, default_convert

from mnist_lit.common.errors import ConfigError
from mnist_lit.lit.data import InMemory, MNISTDataModule
from mnist_lit.lit.internals import count_optimizer_steps, detects_anomalies
from mnist_lit.lit.module import Batch, Classifier, Diverged, fused
from mnist_lit.nn.adam import step_of
from mnist_lit.nn.engine import Captured, Eager, batches


class ExecutionOrder(NamedTuple):
    """What a training step receives, the work order of one execution: the split, resident on the
    device, and the order of the execution's images in it, `batch_size` after `batch_size`.
    Lightning moves `order` to the device; `split` is no tensor, so Lightning leaves it (and its
    60,000 images) alone."""

    split: InMemory
    order: torch.Tensor
    batch_size: int


class Orders(Dataset[ExecutionOrder]):
    """A split as the training loader sees it: a batch of it is the order of one execution's
    images, not the images, so that the training step gathers them on the device itself."""

    def __init__(self, split: InMemory, batch_size: int) -> None:
        self.split, self.batch_size = split, batch_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> ExecutionOrder:
        return ExecutionOrder(self.split, torch.tensor(indices), self.batch_size)


class FastDataModule(MNISTDataModule):
    """MNISTDataModule's splits, for the fast engine: each training batch is an `ExecutionOrder`, the
    order of `steps_per_execution` shuffled mini-batches, which FastClassifier gathers from the
    split on the device itself, so that Lightning's per-step bookkeeping is paid once for many
    optimizer steps; evaluation reads as many images at once. `steps_per_execution` has no default
    here: the command line's is data.steps_per_execution's."""

    def __init__(self, *arguments: Any, steps_per_execution: int, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.steps_per_execution = steps_per_execution

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # As Keras's fit: an execution is at most an epoch (which also bounds every buffer sized by it).
        self.steps_per_execution = min(self.steps_per_execution, batches(len(self.train), self.batch_size))

    @property
    def images_per_step(self) -> int:
        return self.batch_size * self.steps_per_execution

    @property
    def executions(self) -> int:
        """An epoch's executions, the last one perhaps short."""
        return batches(len(self.train), self.images_per_step)

    def execution(self, orders: torch.Tensor, index: int) -> torch.Tensor:
        """Execution `index`'s part of an epoch's `orders` of the training images (..., images)."""
        return orders[..., index * self.images_per_step : (index + 1) * self.images_per_step]

    def train_dataloader(self) -> DataLoader[ExecutionOrder]:  # type: ignore[override]  # executions, not mini-batches
        # Pinned orders reach a GPU without the host waiting for it.
        return DataLoader(
            Orders(self.train, self.batch_size),
            batch_size=self.images_per_step,
            sampler=self.shuffled(),
            collate_fn=default_convert,  # as fetched: its order is a tensor already
            pin_memory=self.train.tensors[0].is_cuda,
        )


_CAPTURABLE = {"capturable": True, "fused": True}


def per_image(losses: torch.Tensor, batch_size: int, images: int) -> torch.Tensor:
    """Each image's weight in an epoch's mean loss: its mini-batch's mean loss, for mini-batch losses
    (..., minibatches) of `images` images in all, the last mini-batch perhaps short."""
    return losses.repeat_interleave(batch_size, dim=-1)[..., :images]


def divergence(losses: torch.Tensor, epoch: int, minibatches_before: int, lr: float) -> "Diverged | None":
    """The error that stops a training whose mini-batch `losses` are no longer all finite numbers:
    every later step and checkpoint would be garbage."""
    bad = (~torch.isfinite(losses)).nonzero()
    if not len(bad):
        return None
    i = int(bad[0])
    return Diverged(
        f"The loss became {losses[i].item()} at epoch {epoch + 1}, mini-batch {minibatches_before + i + 1}: "
        f"lower optimizer.lr (now {float(lr):g}) and start again"
    )


def one_optimizer(module: L.LightningModule) -> LightningOptimizer:
    """The module's optimizer, as Lightning wraps it: configure_optimizers returns one."""
    optimizer = module.optimizers()
    assert isinstance(optimizer, LightningOptimizer)
    return optimizer


# Hooks that an execution, whose steps Lightning does not see, would silently skip.
_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def listeners(trainer: L.Trainer) -> list[str]:
    """What in `trainer` listens to each mini-batch's backward or optimizer step, which only
    Lightning's loop lets it hear: DDP's all-reduce, a gradient scaler, autograd's anomaly mode
    (whose checks read every backward's values on the host), a callback's step hooks."""
    callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # Lightning's CallbackConnector sets it
    heard = [
        f"{type(callback).__name__}'s {hook}"
        for callback in callbacks
        for hook in _STEP_HOOKS
        if is_overridden(hook, callback, L.Callback)
    ]
    if trainer.world_size > 1:
        heard.insert(0, f"DDP over {trainer.world_size} processes")
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        heard.append(f"trainer.precision={trainer.precision}'s gradient scaling")
    if detects_anomalies(trainer):
        heard.append("trainer.detect_anomaly=true")
    return heard


class FastClassifier(Classifier):
    """The Classifier's arguments, and: `capture`: on a GPU, record each execution as a CUDA graph
    (see nn/engine.py); false runs every mini-batch eagerly, for debugging.

    It trains on FastDataModule's executions, or on anyone's `(x, y)` mini-batches. The
    optimization is the engine's own (Lightning's manual optimization): one optimizer step per
    mini-batch. What only Lightning's automatic optimization does (accumulation, clipping, a count
    of steps to stop at, anything that listens to a step) is Lightning's loop's, with the plain
    Classifier."""

    # History sends each epoch's metrics to the loggers (lit/history.py): Lightning would log them
    # at its count of steps, which here are executions.
    logs_epochs = False

    def __init__(self, *arguments: Any, capture: bool = True, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.capture = capture
        # Decided once in `setup`: on a CUDA GPU each execution is recorded once as a CUDA graph,
        # then replayed; else its mini-batches run one after another in plain torch calls.
        self.captured = False
        # A training step runs an execution of many mini-batches (nn/engine.py), or one mini-batch
        # of anyone's (x, y), one optimizer step each.
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        """Decide once how executions run: captured as a CUDA graph on a GPU, else eagerly. What
        would listen to each step is refused: an execution takes its steps out of Lightning's sight."""
        super().setup(stage)
        if stage != "fit":
            return
        heard = listeners(self.trainer)
        heard += [f"its own {hook}" for hook in _STEP_HOOKS if is_overridden(hook, self, FastClassifier)]
        if heard:
            raise ConfigError(
                f"{type(self).__name__} does not do {', '.join(heard)}: train the plain Classifier in their stead, "
                "whose steps Lightning's loop takes"
            )
        self.captured = self.capture and self.trainer.strategy.root_device.type == "cuda"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = _CAPTURABLE if self.captured else fused(self.device)
        optimizer: torch.optim.Optimizer = self.make_optimizer(self.net.parameters(), lr=self.lr, **settings)
        if self.captured:
            # A CUDA graph keeps the address of what it reads, not a float's value: the learning
            # rate as a tensor, so that a new one (a resume, a scheduler's fill_) reaches every replay.
            for group in optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        return self.restores_its_step_settings(optimizer)

    def on_train_start(self) -> None:
        optimizer = one_optimizer(self)
        # Nothing listens to the optimizer's steps: Adam's update without Adam.step's Python.
        step = step_of(optimizer.optimizer)
        context = self.trainer.precision_plugin.forward_context
        eager = Eager(self.net, self.loss, optimizer.optimizer, step, context)
        self.engine: Eager | Captured = Captured(eager) if self.captured else eager

    def on_train_epoch_start(self) -> None:
        self.minibatches_done = 0
        self.pending_losses: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None

    def training_step(self, batch: ExecutionOrder | Batch, batch_idx: int) -> None:
        if not isinstance(batch, ExecutionOrder):
            self._train_minibatch(*batch)
            return
        (images, labels), order, batch_size = batch.split.tensors, batch.order, batch.batch_size
        outcome = self.engine(images, labels, order, batch_size)
        self._trained(outcome.losses)
        self.record(
            "",
            self.train_metrics,
            per_image(outcome.losses, batch_size, len(order)),
            outcome.predictions,
            outcome.labels,
        )

    def _train_minibatch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Anyone's `(images, labels)` mini-batch, through the engine's own per-mini-batch step:
        images of any shape are flattened, as the DataModule flattens them."""
        eager = self.engine.eager if isinstance(self.engine, Captured) else self.engine
        with torch.autocast(images.device.type, enabled=False):
            loss, logits = eager.minibatch(self._flat(images), labels)
        self._trained(loss[None])
        self.record("", self.train_metrics, loss.expand(len(labels)), logits.argmax(-1), labels)

    def _flat(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).to(next(self.net.parameters()).dtype)

    def _trained(self, losses: torch.Tensor) -> None:
        """After mini-batches whose `losses` took an optimizer step each."""
        count_optimizer_steps(self.trainer, len(losses))
        # Check the previous execution's losses while the device runs this one.
        self._check_pending_losses()
        self._keep_for_checking(losses)
        self.minibatches_done += len(losses)

    def on_train_epoch_end(self) -> None:
        self._check_pending_losses()

    def _keep_for_checking(self, losses: torch.Tensor) -> None:
        """On a GPU, the losses are copied to the host behind this execution, and reading them
        waits for that copy alone, not for the executions queued after it."""
        copied = None
        if losses.is_cuda:
            losses = torch.empty(losses.shape, dtype=losses.dtype, pin_memory=True).copy_(losses, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
        self.pending_losses = (losses, copied, self.minibatches_done)

    def _check_pending_losses(self) -> None:
        if self.pending_losses is not None:
            losses, copied, minibatches_before = self.pending_losses
            if copied is not None:
                copied.synchronize()
            self.pending_losses = None
            lr = one_optimizer(self).optimizer.param_groups[0]["lr"]
            error = divergence(losses, self.current_epoch, minibatches_before, lr)
            if error is not None:
                raise error
