"""MNIST as the tutorial prepares it: normalized to [0, 1] and flattened to 784-vectors, once per split.
Fashion-MNIST and KMNIST come in the same four IDX files and are prepared the same way."""

import gzip
import logging
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset, default_convert, random_split
from torchvision.datasets import KMNIST, MNIST, FashionMNIST

from mnist_lit.common import files
from mnist_lit.common.errors import ConfigError, DataError
from mnist_lit.nn.engine import batches
from mnist_lit.nn.images import IMAGE_SHAPE, flatten, normalize

log = logging.getLogger(__name__)

# The data sets torchvision reads from the same four IDX files, in <root>/<name>/raw.
DATASETS = {cls.__name__: cls for cls in (MNIST, FashionMNIST, KMNIST)}
FILES = {  # split: (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def names(dataset: str) -> list[str]:
    """The classes as labels are shown: MNIST's digits "0" to "9", torchvision's names for the others."""
    return [name.split(" - ")[0] for name in DATASETS[dataset].classes]


class InMemory(TensorDataset):
    """A whole split as two tensors, kept on the training device."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        # One gather per batch, where DataLoader would call __getitem__ once per image.
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(tensor[index] for tensor in self.tensors)


class Shard(DistributedSampler[int]):
    """This rank's images of an evaluation split, in order. Each image is on exactly one rank:
    DistributedSampler repeats images to even the ranks out, and so counts them twice. (A
    DistributedSampler still, so that Lightning keeps it.)"""

    def __init__(self, dataset: InMemory, **settings: Any) -> None:
        super().__init__(dataset, shuffle=False, **settings)
        self.split = dataset

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def indices(self) -> range:
        return range(self.rank, len(self.split), self.num_replicas)


class MNISTDataModule(L.LightningDataModule):
    """The official split: 60,000 images to train on, the 10,000 test images to validate and test on.

    Every loader yields `(images, labels)` mini-batches of `batch_size`: float32 images in [0, 1]
    flattened to 784, and class indices (the loss one-hot encodes them where it asks for that). The
    training shuffle depends only on `seed` and the epoch, and a DistributedSampler gives each rank its
    own shard when there are several; each evaluated image is on exactly one rank.

    `root`: where `<dataset>/raw` lies; by default $MNIST_LIT_DATA, else a per-user cache.

    `val_size > 0` holds that many seeded training images out for validation instead, so that
    models are not selected on the test set.

    The fast engine's DataModule (lit/fast.py's FastDataModule) is this one, its training batches
    executions of many mini-batches.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 32,
        val_size: int = 0,
        seed: int = 0,
        dataset: str = "MNIST",
    ) -> None:
        super().__init__()
        self.root = root or files.data_root()
        self.dataset = dataset
        self.names = names(dataset)
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        # The splits, once setup() has read them.
        self.train: InMemory
        self.val: InMemory
        self.test: InMemory
        self.ready = False

    @property
    def raw(self) -> Path:
        return Path(self.root) / self.dataset / "raw"

    def prepare_data(self) -> None:
        """Download the data set once, unless its four files are there (a read-only root is fine then).

        Parallel jobs on one empty root take turns on a lock: the first downloads, the others
        then find the files. Each file is completed elsewhere and renamed into place, so
        a file that is there is whole."""
        if self._complete():
            return
        try:
            self.raw.mkdir(parents=True, exist_ok=True)
            with FileLock(self.raw / ".download.lock"):
                if not self._complete():
                    self._download()
        except OSError as error:
            raise DataError(
                f"data.root={self.root} is not writable ({error.strerror or error}), and {self.dataset} must be "
                "downloaded "
                f"into it: set data.root or MNIST_LIT_DATA to a writable directory, or put {_names()} into "
                f"{self.raw} by hand"
            ) from error

    def _complete(self) -> bool:
        return all((self.raw / name).exists() for pair in FILES.values() for name in pair)

    def _download(self) -> None:
        with tempfile.TemporaryDirectory(dir=self.raw.parent, prefix=".download-") as staging:
            staged = Path(staging) / self.dataset / "raw"
            staged.mkdir(parents=True)
            # Archives placed by hand, the originals or recompressed (Debian's Fashion-MNIST, whose
            # checksums torchvision does not know): what they hold is checked by check_idx on loading.
            for archive in self.raw.glob("*.gz"):
                with gzip.open(archive) as source, open(staged / archive.stem, "wb") as target:
                    shutil.copyfileobj(source, target)
            try:
                for train in (True, False):
                    DATASETS[self.dataset](staging, train=train, download=True)
            except RuntimeError as error:
                reason = str(error).strip().splitlines()[-1]
                raise DataError(
                    f"{self.dataset} is not in {self.raw} and could not be downloaded ({reason}). Without network, put "
                    f"{_names()} (uncompressed, or as the original .gz) into {self.raw}, or set MNIST_LIT_DATA "
                    f"(or data.root) to a directory whose {self.dataset}/raw holds them"
                ) from error
            for pair in FILES.values():
                for name in pair:
                    os.replace(staged / name, self.raw / name)

    def setup(self, stage: str) -> None:
        if self.ready:
            return
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        train, self.test = (self._load(split, device) for split in (True, False))
        self.train, self.val = train, self.test
        if self.val_size:
            if self.val_size >= len(train):
                raise ConfigError(
                    f"data.val_size={self.val_size} leaves nothing to train on: "
                    f"hold out fewer than the {len(train)} training images"
                )
            parts: list[Subset[int]] = random_split(
                range(len(train)),  # type: ignore[arg-type]  # a range indexes as a Dataset does
                [len(train) - self.val_size, self.val_size],
                generator=torch.Generator().manual_seed(self.seed),
            )
            kept, held_out = (part.indices for part in parts)
            self.train, self.val = InMemory(*train[kept]), InMemory(*train[held_out])
        # As Keras's fit: a batch larger than the training images is all of them.
        self.batch_size = min(self.batch_size, len(self.train))
        self.ready = True

    def _load(self, train: bool, device: torch.device) -> InMemory:
        images, labels = (self.raw / name for name in FILES["train" if train else "test"])
        count, label_count = check_idx(images, IMAGE_SHAPE), check_idx(labels, ())
        if label_count != count:
            raise DataError(f"{images} holds {count} images but {labels} holds {label_count} labels; {_FIX}")
        mnist = DATASETS[self.dataset](self.root, train=train)
        outside = (mnist.targets >= len(self.names)).nonzero().flatten()
        if len(outside):
            item = int(outside[0])
            raise DataError(
                f"{labels} holds the label {int(mnist.targets[item])} at item {item}, where {self.dataset}'s "
                f"classes are 0 to {len(self.names) - 1}; {_FIX}"
            )
        _describe("x_train" if train else "x_test", mnist.data)
        return InMemory(flatten(normalize(mnist.data)).to(device), mnist.targets.to(device))

    @property
    def images_per_step(self) -> int:
        """The images of one Lightning step: a mini-batch's here (an execution's on the fast engine),
        which evaluation reads at once too."""
        return self.batch_size

    def shuffled(self) -> DistributedSampler[int]:
        """This rank's shuffled order of the training images. Lightning calls its set_epoch, so the
        shuffle is a function of (seed, epoch): a resumed run sees the same batches as an
        uninterrupted one."""
        world_size, rank = self._ranks()
        return DistributedSampler(self.train, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed)

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        # Keywords only: Lightning re-creates loaders from their arguments (predict, DDP).
        return DataLoader(self.train, batch_size=self.batch_size, sampler=self.shuffled(), collate_fn=default_convert)

    def _ranks(self) -> tuple[int, int]:
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)

    def _eval_dataloader(self, split: InMemory) -> DataLoader[tuple[torch.Tensor, ...]]:
        world_size, rank = self._ranks()
        # Evaluation takes no optimizer steps, so it reads a whole step's images at once.
        sampler = Shard(split, num_replicas=world_size, rank=rank)
        return DataLoader(split, batch_size=self.images_per_step, sampler=sampler, collate_fn=default_convert)

    def evaluated(self, stage: str, world_size: int, limit: int | float) -> InMemory:
        """The images that `stage` ("val" or "test") evaluates on `world_size` ranks together, as
        the Trainer's limit_<stage>_batches `limit` cuts each rank's batches: to a count, or a
        fraction (1.0 when none was given)."""
        split = self.val if stage == "val" else self.test
        index: list[int] = []
        for rank in range(world_size):
            share = Shard(split, num_replicas=world_size, rank=rank).indices
            steps = batches(len(share), self.images_per_step)
            kept = min(steps, limit) if isinstance(limit, int) else int(steps * limit)
            index += share[: kept * self.images_per_step]
        index.sort()
        return split if len(index) == len(split) else InMemory(*(tensor[index] for tensor in split.tensors))

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self._eval_dataloader(self.val)

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self._eval_dataloader(self.test)

    def predict_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self._eval_dataloader(self.test)


_FIX = "delete the damaged file to download it again, or replace it with a good copy"


def check_idx(path: Path, item_shape: tuple[int, ...]) -> int:
    """How many uint8 items of `item_shape` an IDX file holds; a DataError naming the file if it
    is not such a file, or is truncated: training on garbage is worse than not training."""
    dims = 1 + len(item_shape)
    with open(path, "rb") as f:
        header = f.read(4 + 4 * dims)
    kind = "images" if item_shape else "labels"
    if len(header) < 4 + 4 * dims or header[:4] != bytes([0, 0, 0x08, dims]):
        raise DataError(
            f"{path} is not an IDX file of {kind} (its magic number is {header[:4].hex() or 'missing'}); {_FIX}"
        )
    count, *shape = struct.unpack(f">{dims}I", header[4:])
    if tuple(shape) != item_shape:
        raise DataError(f"{path} holds {kind} of shape {tuple(shape)}, not {item_shape}; {_FIX}")
    size, expected = path.stat().st_size, len(header) + count * math.prod(item_shape)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise DataError(f"{path} is {state}: {size} bytes, where {count} {kind} take {expected}; {_FIX}")
    return int(count)


def _names() -> str:
    return ", ".join(name for pair in FILES.values() for name in pair)


@rank_zero_only
def _describe(name: str, images: torch.Tensor) -> None:
    log.info("%s shape %s, pixel range [%d,%d]", name, tuple(images.shape), images.min(), images.max())
