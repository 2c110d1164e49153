"""The LightningModule: Keras's compile() + fit() for the tutorial's networks, as Lightning's own
examples write one. Lightning's loop trains it, so every Trainer feature works with it (accumulation,
clipping, schedulers, SWA, the tuner, any logger). The fast engine (lit/fast.py) is a subclass that
runs many mini-batches per step instead."""

import importlib
import inspect
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.common.choices import LOSSES, MOVED, OPTIMIZERS
from mnist_lit.common.errors import ConfigError, UserError
from mnist_lit.lit.internals import carry_optimizer_steps
from mnist_lit.lit.saving import find, verified
from mnist_lit.nn.network import CLASSES, DenseNetwork

Batch = tuple[torch.Tensor, torch.Tensor]


class Diverged(UserError, ArithmeticError):
    """The training loss is no longer a finite number."""


class EpochMetrics(nn.Module):
    """Keras's epoch means over images: the mean loss and the fraction of images right.

    nan_strategy="disable": a diverged run must show a NaN loss, not the mean of what is left; it
    also drops update()'s weights (torchmetrics 1.9), so losses come in once per image.
    validate_args=False: the labels come from our own data; checking them costs more than counting."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = MeanMetric(nan_strategy="disable")
        self.accuracy = MulticlassAccuracy(CLASSES, average="micro", validate_args=False)

    def update(self, losses: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """`losses`: each image's (its mini-batch's mean loss), so that the mean weighs every image alike."""
        self.loss.update(losses)
        self.accuracy.update(predictions, labels)

    def named(self, prefix: str = "") -> dict[str, Metric]:
        return {f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy}

    def reset(self) -> None:
        self.loss.reset()
        self.accuracy.reset()


def known(table: dict[str, str], kind: str, name: str) -> Any:
    """The class that `name` stands for in one of the project's tables of choices: a name from a
    checkpoint or a command line is looked up there, never imported as it is given."""
    if name not in table:
        raise ConfigError(f"{kind}={name!r} is unknown; choose one of: {', '.join(table)}")
    module, _, attribute = table[name].rpartition(".")
    return getattr(importlib.import_module(module), attribute)


# Adam's fused kernel: one call per step for all the tensors, on the CPU (faster there than torch's
# default for the tutorial's networks; benchmarks/RESULTS.md) as on a GPU. Both engines step with
# it, so that they keep equal numbers.
def fused(device: torch.device) -> dict[str, bool]:
    """Adam's setting for its fused kernel, where the device has one."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def restore_step_settings(settings: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """After loading a checkpoint's optimizer state: step as this run was set up to (capturable or
    not, fused or not, its learning rate), with Adam's step counts where that needs them, not as
    the saving run did."""
    for group in optimizer.param_groups:
        group.update(settings)
        on_device = group.get("capturable") or group.get("fused")
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                step = state["step"]
                state["step"] = step.to(param.device, torch.float32) if on_device else step.to("cpu", torch.float32)


STEP_SETTINGS = ("capturable", "fused", "lr")


class Classifier(L.LightningModule):
    """Input(784) → Dense(width, activation) per `hidden` → Dense(10), trained with `loss` by
    `optimizer` (both by name: common/choices.py). The defaults are the tutorial's logistic
    regression with Keras's Adam; `hidden=[100]` is its MLP.

    Lightning users give other optimizers and schedulers the Lightning way: LightningCLI's
    `--optimizer` and `--lr_scheduler`, or an override of `configure_optimizers`."""

    # Not mutated (tests/mutation.sh): mutmut's trampoline would hide its frame from save_hyperparameters.
    def __init__(
        self,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        init: str = "keras",
        loss: str = "categorical",
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:  # pragma: no mutate block
        super().__init__()
        self.save_hyperparameters()
        self.net = DenseNetwork(list(hidden), activation, init)
        self.loss = known(LOSSES, "loss", loss)()
        self.make_optimizer = partial(known(OPTIMIZERS, "optimizer", optimizer), betas=tuple(betas), eps=eps)
        self.lr = lr  # an attribute, where Lightning's lr_find sets what it found
        self.train_metrics, self.val_metrics, self.test_metrics = EpochMetrics(), EpochMetrics(), EpochMetrics()

    def setup(self, stage: str) -> None:
        # A spawned rank receives the module pickled, its metric states moved into memory that
        # every rank shares (Lightning un-shares parameters and buffers only): fresh states, each
        # rank's own, before any rank adds to them.
        for metrics in (self.train_metrics, self.val_metrics, self.test_metrics):
            metrics.reset()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of images of any shape, flattened as the DataModule flattens them."""
        logits: torch.Tensor = self.net(images.flatten(1).to(next(self.net.parameters()).dtype))
        return logits

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        images, labels = batch
        logits = self(images)
        loss: torch.Tensor = self.loss(logits, labels)
        self.record("", self.train_metrics, loss.detach().expand(len(labels)), logits.detach().argmax(-1), labels)
        return loss

    def validation_step(self, batch: Batch) -> None:
        self._evaluate("val_", self.val_metrics, batch)

    def test_step(self, batch: Batch) -> None:
        self._evaluate("test_", self.test_metrics, batch)

    def predict_step(self, batch: Batch) -> torch.Tensor:
        probabilities: torch.Tensor = self(batch[0]).softmax(-1)
        return probabilities

    def _evaluate(self, prefix: str, metrics: EpochMetrics, batch: Batch) -> None:
        images, labels = batch
        logits = self(images)
        self.record(prefix, metrics, self.loss(logits, labels).expand(len(labels)), logits.argmax(-1), labels)

    # Every logger gets each epoch's metrics, and trainer.validate and trainer.test return them.
    logs_epochs = True

    # Counting is bookkeeping, not the network: a torch.compile'd module runs it as it is, where dynamo
    # would recompile its step for each new count a metric keeps.
    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def record(
        self, prefix: str, metrics: EpochMetrics, losses: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Count a mini-batch into the epoch's metrics, which Lightning computes at the epoch's end."""
        metrics.update(losses, predictions, labels)
        self.log_dict(
            metrics.named(prefix),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            logger=None if self.logs_epochs or prefix == "test_" else False,  # None: Lightning's default
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.make_optimizer(self.parameters(), lr=self.lr, **self.step_settings())
        return self.restores_its_step_settings(optimizer)

    def step_settings(self) -> dict[str, Any]:
        """The fused step where the device has one, but where Lightning's mixed precision clips the
        gradients: it refuses to clip for an optimizer that could unscale them itself."""
        trainer = self._trainer
        clipped = (
            trainer is not None and trainer.gradient_clip_val and isinstance(trainer.precision_plugin, MixedPrecision)
        )
        return {} if clipped else fused(self.device)

    @staticmethod
    def restores_its_step_settings(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """A checkpoint keeps how its run stepped; a run resumed on a CPU or a GPU, or by the other
        engine, steps its own way, at the learning rate it was given."""
        first = optimizer.param_groups[0]
        settings = {key: first[key] for key in STEP_SETTINGS if key in first}
        optimizer.register_load_state_dict_post_hook(partial(restore_step_settings, settings))
        return optimizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resume on another number of processes trains with another real batch: it says so.
        checkpoint["processes"] = self.trainer.world_size

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed by the other engine goes on counting its steps from where they were.
        carry_optimizer_steps(checkpoint, self.automatic_optimization)

    def __getstate__(self) -> dict[str, Any]:
        # Lightning trains a torch.compile'd module by wrapping its steps on the instance, and
        # leaves them there after fit; pickle cannot save them. Pickled, it is the plain Classifier.
        state: dict[str, Any] = super().__getstate__()
        if state.get("_compiler_ctx"):
            for step in ("forward", "training_step", "validation_step", "test_step", "predict_step"):
                state.pop(step, None)
            state["_compiler_ctx"] = None
        return state

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> "Classifier":
        """Lightning's own, for a checkpoint of any Trainer or LightningCLI; one of an mnist_lit run
        holds its run's whole config, whose network, loss and optimizer are read as this class's
        arguments. Read as data: `weights_only=False` is refused."""
        if weights_only is False:
            raise ConfigError("weights_only=False: mnist_lit reads checkpoints as data only; leave weights_only out")
        unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: not an argument of {cls.__name__}; its arguments: "
                f"{', '.join(inspect.signature(cls).parameters)}"
            )
        path = find(checkpoint_path, "checkpoint") if isinstance(checkpoint_path, (str, Path)) else checkpoint_path
        checkpoint = verified(torch.load(path, map_location="cpu", weights_only=True), str(checkpoint_path))
        if not isinstance(path, Path):
            path.seek(0)  # Lightning reads it again
        arguments = {**arguments_of(checkpoint.get("hyper_parameters", {})), **kwargs}
        try:
            made = super().load_from_checkpoint(
                path, map_location, hparams_file, strict, weights_only=True, **arguments
            )
        except ConfigError as error:
            raise ConfigError(f"checkpoint={checkpoint_path}: {error}") from None
        assert isinstance(made, Classifier)
        return made


def arguments_of(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """Classifier's arguments in a checkpoint's hyper-parameters: its own (any Trainer's checkpoint),
    or those of an mnist_lit run's config (which holds a network, a loss and an optimizer)."""
    if not {"model", "loss", "optimizer"} <= set(hyper_parameters):
        return {}
    model, loss, optimizer = (hyper_parameters[key] for key in ("model", "loss", "optimizer"))
    named = {target: name for table in (LOSSES, OPTIMIZERS) for name, target in table.items()}
    return {
        "hidden": list(model["hidden"]),
        "activation": model.get("activation", "relu"),
        "init": model.get("init", "keras"),
        "loss": named.get(MOVED.get(loss["_target_"], loss["_target_"]), loss["_target_"]),
        "optimizer": named.get(optimizer["_target_"], optimizer["_target_"]),
        "lr": optimizer["lr"],
        "betas": list(optimizer["betas"]),
        "eps": optimizer["eps"],
    }
