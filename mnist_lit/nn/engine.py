"""The training engine: an execution, Keras's `steps_per_execution`, runs many mini-batches, each a
forward pass, a loss and a backward pass, with an optimizer step after each mini-batch, and reports
their losses and predictions.

One contract, three forms:

- `Eager` runs the mini-batches one after another in Python, with plain torch calls: nothing
  listens to a step (Lightning's loop trains what must).
- `Captured` records an `Eager` execution once as a CUDA graph and replays it: one launch per
  execution instead of one per operation, and the host never waits for the device.
- `Batched` runs K networks of one shape as one `StackedNetwork` (nn/stacked.py, for the stacked launcher):
  K mini-batches through batched matmuls, one optimizer step for all.

Pure torch: the fast engine's LightningModule (lit/fast.py) chooses the form and supplies the calls,
and the executions: the order of their images in a split that lies on the device.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import torch
from torch import nn

from mnist_lit.nn.loss import image_losses
from mnist_lit.nn.stacked import StackedNetwork


def batches(items: int, batch_size: int) -> int:
    """How many batches of `batch_size` hold `items`, the last one perhaps short."""
    return -(-items // batch_size)


class Outcome(NamedTuple):
    losses: torch.Tensor  # one mean loss per mini-batch
    predictions: torch.Tensor  # one class per image, in `order`
    labels: torch.Tensor


class Eager:
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: Callable[[], Any] | None = None,
        forward_context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.net, self.loss, self.optimizer = net, loss, optimizer
        self.step = step or optimizer.step
        self.forward_context = forward_context

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Outcome:
        # Mixed precision covers the forward pass and the loss alone, not backward and the
        # optimizer step (PyTorch's advice), whatever region the caller runs in.
        with torch.autocast(images.device.type, enabled=False):
            # One gather for the whole execution, not two for each mini-batch: small steps are
            # mostly the cost of each operation they launch.
            inputs, targets = images[order].to(self.dtype), labels[order]
            losses, logits = [], []
            for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True):
                loss, out = self.minibatch(x, y)
                losses.append(loss)
                logits.append(out)
        # One argmax for the execution, not one a mini-batch.
        return Outcome(torch.stack(losses), torch.cat(logits).argmax(-1), targets)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def minibatch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mini-batch and its optimizer step: its mean loss and its logits, detached. Every
        form of batch goes through here, an execution's or anyone's `(x, y)`."""
        with self.forward_context():
            logits = self.net(x)
            loss = self.loss(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.step()
        return loss.detach().float(), logits.detach()


class Captured:
    """An `Eager` execution recorded as a CUDA graph, one graph per execution length (an epoch's
    last execution is shorter), replayed with the order copied into the graph's own buffer.

    The first execution of each length runs eagerly, as real training, and warms up what capture
    needs (the optimizer's state, cuBLAS); the graph is recorded after it and replayed from the
    next one on. The optimizer must be capturable (Adam's `capturable=True`)."""

    def __init__(self, eager: Eager) -> None:
        self.eager = eager
        self.graphs: dict[tuple[int, int, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, Outcome]] = {}
        # A graph replays on the tensors it recorded: loading an optimizer state replaces Adam's
        # (and the module's post-hook its step counts), so the graphs recorded before are dropped.
        eager.optimizer.register_load_state_dict_post_hook(lambda optimizer: self.graphs.clear())

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Outcome:
        key = (images.data_ptr(), labels.data_ptr(), len(order), batch_size)
        if key in self.graphs:
            graph, static_order, outcome = self.graphs[key]
            static_order.copy_(order)
            graph.replay()
            # The next replay overwrites the graph's outputs; callers may keep these a while.
            return Outcome(*(tensor.clone() for tensor in outcome))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outcome = self.eager(images, labels, order, batch_size)
        torch.cuda.current_stream().wait_stream(side)
        static_order = order.clone()
        # Gradients set to None now are allocated from the graph's private memory during capture.
        self.eager.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outcome = self.eager(images, labels, static_order, batch_size)
        self.graphs[key] = (graph, static_order, static_outcome)
        return outcome


class Batched:
    """The step contract for K networks of one shape at once (a StackedNetwork): `order` is
    (K, n), one order per network, and the Outcome's tensors gain a leading K. Each network's
    gradient is its own loss's (the sum's backward gives every term 1), so one network's NaN never
    reaches another; Adam is elementwise, so one optimizer step serves all."""

    def __init__(self, net: StackedNetwork, optimizer: torch.optim.Optimizer) -> None:
        self.net, self.optimizer = net, optimizer

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Outcome:
        losses, predictions = [], []
        targets = labels[order]
        # Each mini-batch's images gathered as it comes, K × batch_size of them, still in cache
        # when the matmul reads them: the whole execution's at once is K times a single
        # network's, a fresh allocation the size of the cache or more.
        for step, y in zip(order.split(batch_size, dim=1), targets.split(batch_size, dim=1), strict=True):
            # index_select of rows: indexing with the (K, n) order itself takes far longer.
            x = images.index_select(0, step.flatten()).view(*step.shape, -1)
            logits = self.net(x)
            loss = image_losses(logits, y).mean(1)
            self.optimizer.zero_grad()
            loss.sum().backward()
            self.net.mask_gradients()
            self.optimizer.step()
            losses.append(loss.detach())
            # max, not argmax: over classes that are not the innermost dimension (the logits lie as
            # (K, classes, n)), argmax takes far longer.
            predictions.append(logits.detach().max(-1).indices)
        return Outcome(torch.stack(losses, 1), torch.cat(predictions, 1), targets)
