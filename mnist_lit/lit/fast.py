"""The fast engine: the Classifier trained Keras's way, `steps_per_execution` mini-batches per
Lightning step (nn/engine.py's executions), captured as CUDA graphs on a GPU. Lightning's own loop
trains the plain Classifier (lit/module.py); this subclass is chosen when the run is built, because
Lightning refuses a manual optimization's settings before `setup` runs."""

from enum import Enum
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.model_helpers import is_overridden

from mnist_lit.lit.internals import count_optimizer_steps, detects_anomalies
from mnist_lit.lit.module import Batch, Classifier, Diverged, fused
from mnist_lit.nn.adam import step_of
from mnist_lit.nn.engine import Captured, Eager, Execution


class Form(str, Enum):
    """How a training step runs the engine (nn/engine.py), decided once in `setup`."""

    EAGER = "eager"  # plain torch calls, mini-batch after mini-batch
    CAPTURED = "captured"  # on a CUDA GPU: recorded once as a CUDA graph, then replayed
    HOOKED = "hooked"  # through Lightning's backward and optimizer step, where anything listens to them


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


# Hooks that an eager step without Lightning's backward and optimizer step would silently skip.
_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class FastClassifier(Classifier):
    """The Classifier's arguments, and: `capture`: on a GPU, record each execution as a CUDA graph
    (see nn/engine.py); false runs every mini-batch eagerly, for debugging.

    The optimization is the engine's own (Lightning's manual optimization): one optimizer step per
    mini-batch. What only Lightning's automatic optimization does (accumulation, clipping, a count
    of steps to stop at) is Lightning's loop's, with the plain Classifier."""

    # History sends each epoch's metrics to the loggers (lit/history.py): Lightning would log them
    # at its count of steps, which here are executions.
    logs_epochs = False
    # The DataModule's training batches are executions of `steps_per_execution` mini-batches.
    takes_executions = True

    def __init__(self, *arguments: Any, capture: bool = True, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.capture = capture
        self.form = Form.EAGER
        # A training step runs an execution of many mini-batches (nn/engine.py), or one mini-batch
        # of anyone's (x, y), one optimizer step each.
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        """Decide once how executions run: through Lightning's backward and optimizer step where
        anything listens (a callback's hooks, DDP, a gradient scaler, autograd's anomaly mode, whose
        checks read every backward's values on the host), else plain torch calls, captured as a CUDA
        graph on a GPU."""
        super().setup(stage)
        if stage != "fit":
            return
        trainer = self.trainer
        callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # Lightning's CallbackConnector sets it
        listening = (
            trainer.world_size > 1
            or detects_anomalies(trainer)
            or torch.is_anomaly_enabled()
            or getattr(trainer.precision_plugin, "scaler", None) is not None
            or any(is_overridden(hook, callback, L.Callback) for callback in callbacks for hook in _STEP_HOOKS)
            or any(is_overridden(hook, self, FastClassifier) for hook in _STEP_HOOKS)
        )
        device = trainer.strategy.root_device
        self.form = (
            Form.HOOKED if listening else Form.CAPTURED if self.capture and device.type == "cuda" else Form.EAGER
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = _CAPTURABLE if self.form == Form.CAPTURED else fused(self.device)
        optimizer: torch.optim.Optimizer = self.make_optimizer(self.net.parameters(), lr=self.lr, **settings)
        if self.form == Form.CAPTURED:
            # A CUDA graph keeps the address of what it reads, not a float's value: the learning
            # rate as a tensor, so that a new one (a resume, a scheduler's fill_) reaches every replay.
            for group in optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        return self.restores_its_step_settings(optimizer)

    def on_train_start(self) -> None:
        optimizer = one_optimizer(self)
        context = self.trainer.precision_plugin.forward_context
        self.engine: Eager | Captured
        if self.form == Form.HOOKED:
            backward, step = self.manual_backward, optimizer.step
            self.engine = Eager(self.net, self.loss, optimizer.optimizer, backward, step, context)
            return
        # Nothing listens to the optimizer's steps: Adam's update without Adam.step's Python.
        adam_step = step_of(optimizer.optimizer)
        eager = Eager(self.net, self.loss, optimizer.optimizer, step=adam_step, forward_context=context)
        self.engine = Captured(eager) if self.form == Form.CAPTURED else eager

    def on_train_epoch_start(self) -> None:
        self.minibatches_done = 0
        self.pending_losses: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None

    def training_step(self, batch: Execution | Batch, batch_idx: int) -> None:
        if not isinstance(batch, Execution):
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
        if self.form != Form.HOOKED:  # through Lightning's optimizer wrapper, Lightning counted them
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
