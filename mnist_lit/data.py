"""MNIST as the tutorial prepares it: normalized to [0, 1] and flattened to 784-vectors, once per split."""

import logging
from functools import partial

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, default_convert, random_split
from torchvision.datasets import MNIST

log = logging.getLogger(__name__)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] → float32 in [0, 1]."""
    return images.to(torch.float32).div_(255)


def flatten(images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28) → (n, 784)."""
    return images.reshape(len(images), -1)


class InMemory(TensorDataset):
    """A whole split as two tensors, kept on the training device."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        # One gather per batch, where DataLoader would call __getitem__ once per image.
        return self[torch.as_tensor(indices, device=self.tensors[0].device)]


def minibatches(batch: tuple[torch.Tensor, torch.Tensor], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut one fetched batch into the mini-batches that one training step runs through."""
    images, labels = batch
    return list(zip(images.split(size), labels.split(size)))


class MNISTDataModule(L.LightningDataModule):
    """The official split: 60,000 images to train on, the 10,000 test images to validate and test on.

    Each training step receives `steps_per_execution` shuffled mini-batches of `batch_size`
    images (Keras's `steps_per_execution`), so that Lightning's per-step bookkeeping is paid
    once for many optimizer steps. The shuffle depends only on `seed` and the epoch, and a
    DistributedSampler gives each rank its own shard when there are several.

    `val_size > 0` holds that many seeded training images out for validation instead, so that
    models are not selected on the test set.
    """

    def __init__(
        self, root: str, batch_size: int = 32, val_size: int = 0, steps_per_execution: int = 100, seed: int = 0
    ) -> None:
        super().__init__()
        self.root = root
        self.batch_size = batch_size
        self.val_size = val_size
        self.steps_per_execution = steps_per_execution
        self.seed = seed
        self.train: InMemory | None = None

    def prepare_data(self) -> None:
        for train in (True, False):
            MNIST(self.root, train=train, download=True)

    def setup(self, stage: str) -> None:
        if self.train is not None:
            return
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        train, self.test = (self._load(split, device) for split in (True, False))
        if self.val_size == 0:
            self.train, self.val = train, self.test
            return
        if self.val_size >= len(train):
            raise ValueError(
                f"data.val_size={self.val_size} leaves nothing to train on: "
                f"hold out fewer than the {len(train)} training images"
            )
        kept, held_out = random_split(
            range(len(train)),
            [len(train) - self.val_size, self.val_size],
            generator=torch.Generator().manual_seed(self.seed),
        )
        self.train, self.val = InMemory(*train[kept.indices]), InMemory(*train[held_out.indices])

    def _load(self, train: bool, device: torch.device) -> InMemory:
        mnist = MNIST(self.root, train=train)
        _describe("x_train" if train else "x_test", mnist.data)
        return InMemory(flatten(normalize(mnist.data)).to(device), mnist.targets.to(device))

    def train_dataloader(self) -> DataLoader:
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # Lightning calls set_epoch on this sampler, so the shuffle is a function of (seed, epoch):
        # a resumed run sees the same batches as an uninterrupted one.
        sampler = DistributedSampler(self.train, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed)
        return DataLoader(
            self.train,
            self.batch_size * self.steps_per_execution,
            sampler=sampler,
            collate_fn=partial(minibatches, size=self.batch_size),
        )

    def _eval_dataloader(self, split: InMemory) -> DataLoader:
        # Evaluation takes no optimizer steps, so it reads a whole training step's images at once.
        return DataLoader(split, self.batch_size * self.steps_per_execution, collate_fn=default_convert)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader(self.test)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_dataloader(self.test)


@rank_zero_only
def _describe(name: str, images: torch.Tensor) -> None:
    log.info("%s shape %s, pixel range [%d,%d]", name, tuple(images.shape), images.min(), images.max())
