"""A stacked launcher's training step (the engine's `Batched` form) against the same networks'
steps one at a time (`Eager`, as each job's own run takes them with the fast engine), for the
stacks that a pruned search trains: a batch of 8 trials of mixed widths, activations and learning
rates, and the survivors that go on as 2 or 3.

    python benchmarks/stack_step.py [--steps 300] [--turns 3]

Each figure is the best of `--turns` runs of `--steps` mini-batches of 32 random images, after a
warm-up, in one process; fused Adam as both engines step.
"""

import argparse
import time

import torch
from torch import nn

from mnist_lit.nn.adam import step_of
from mnist_lit.nn.engine import Batched, Eager
from mnist_lit.nn.network import DenseNetwork
from mnist_lit.nn.stacked import StackedAdam, StackedNetwork

# (width, activation, learning rate) of each network; the first 8 are the first batch of
# benchmarks/search_pruning.py's stacked search, the others what survives its batches.
STACKS = {
    "8 trials": [
        (64, "elu", 4.4e-3),
        (128, "tanh", 7.8e-2),
        (256, "relu", 1.1e-4),
        (256, "elu", 2.3e-4),
        (256, "gelu", 2.3e-3),
        (128, "tanh", 1.2e-3),
        (128, "relu", 8.8e-4),
        (128, "gelu", 9.1e-3),
    ],
    "2 survivors": [(64, "elu", 4.4e-3), (256, "gelu", 2.3e-3)],
    "3 survivors": [(256, "relu", 2.1e-3), (256, "relu", 1.8e-3), (256, "gelu", 2.4e-3)],
}
IMAGES = 60_000


def timed(
    engine: Batched | Eager, orders: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, turns: int
) -> float:
    """Milliseconds per mini-batch, the best of `turns`."""
    steps = orders.shape[-1] // 32
    engine(images, labels, orders[..., :320], 32)
    best = float("inf")
    for _ in range(turns):
        started = time.perf_counter()
        engine(images, labels, orders, 32)
        best = min(best, (time.perf_counter() - started) / steps * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = torch.rand(IMAGES, 784), torch.randint(0, 10, (IMAGES,))
    print("| stack | stacked, ms a step | one at a time, ms a step | stacked / one at a time |")
    print("| --- | --- | --- | --- |")
    for name, networks in STACKS.items():
        nets: list[nn.Sequential] = [DenseNetwork([width], activation) for width, activation, _ in networks]
        lrs = [lr for _, _, lr in networks]
        orders = torch.stack([torch.randperm(IMAGES)[: args.steps * 32] for _ in nets])
        stack = StackedNetwork(nets)
        stacked = timed(
            Batched(stack, StackedAdam(stack.parameters(), lrs, eps=1e-7, fused=True)),
            orders,
            images,
            labels,
            args.turns,
        )
        alone = 0.0
        for net, lr, order in zip(nets, lrs, orders, strict=True):
            adam = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7, fused=True)
            alone += timed(Eager(net, nn.CrossEntropyLoss(), adam, step_of(adam)), order, images, labels, args.turns)
        print(f"| {name} | {stacked:.2f} | {alone:.2f} | {stacked / alone:.2f} |")


if __name__ == "__main__":
    main()
