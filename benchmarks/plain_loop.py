"""The loop a user writes by hand, in a process of its own that imports torch and torchvision only:
MNIST in memory, normalized and flattened, integer labels, nn.CrossEntropyLoss, torch's Adam with
Keras's lr and eps, batch 32 over a fresh permutation each epoch, and the 10,000 test images
evaluated after each epoch. Prints one JSON line: each epoch's training and evaluation seconds.

    python benchmarks/plain_loop.py <data root> <logreg|mlp> [--epochs 3] [--device cpu]

benchmarks/epoch_speed.py runs it; it is the reference mnist_lit is measured against.
"""

import argparse
import json
import time

import torch
from torch import nn
from torchvision.datasets import MNIST


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("model", choices=["logreg", "mlp"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    def split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mnist = MNIST(args.root, train=train)
        return (mnist.data.float() / 255).reshape(len(mnist.data), -1).to(device), mnist.targets.to(device)

    (images, labels), (test_images, test_labels) = split(True), split(False)
    layers = [nn.Linear(784, 10)] if args.model == "logreg" else [nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10)]
    net = nn.Sequential(*layers).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    epochs = []
    for _ in range(args.epochs):
        synchronize()
        started = time.perf_counter()
        net.train()
        permutation = torch.randperm(len(images), device=device)
        for i in range(0, len(images), 32):
            batch = permutation[i : i + 32]
            loss = loss_fn(net(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize()
        trained = time.perf_counter()
        net.eval()
        with torch.no_grad():
            logits = net(test_images)
            loss_fn(logits, test_labels).item(), (logits.argmax(-1) == test_labels).float().mean().item()
        synchronize()
        epochs.append({"train": trained - started, "evaluate": time.perf_counter() - trained})
    print(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "epochs": epochs}))


if __name__ == "__main__":
    main()
