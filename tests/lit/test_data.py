import torch

from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.lit.fast import FastDataModule
from mnist_lit.nn.images import flatten, normalize


def test_normalize_and_flatten():
    images = torch.tensor([[[0, 255], [128, 1]]], dtype=torch.uint8)
    x = flatten(normalize(images))
    assert x.dtype == torch.float32 and x.shape == (1, 4)
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.allclose(x, torch.tensor([[0.0, 1.0, 128 / 255, 1 / 255]]))


def datamodule(root, kind=MNISTDataModule, **kwargs) -> MNISTDataModule:
    dm = kind(str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_whole_splits_are_normalized_and_flattened_once(tiny_mnist, caplog):
    caplog.set_level("INFO")
    dm = datamodule(tiny_mnist)
    images, labels = dm.train.tensors
    assert images.shape == (640, 784) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.shape == (640,) and labels.dtype == torch.int64
    assert dm.val is dm.test and len(dm.test) == 160
    assert "x_train shape (640, 28, 28), pixel range [0,255]" in caplog.text


def test_training_steps_get_executions_covering_each_image_once(tiny_mnist):
    dm = datamodule(tiny_mnist, FastDataModule, batch_size=32, steps_per_execution=3)
    executions = list(dm.train_dataloader())
    # 640 images = 20 mini-batches of 32, 3 per execution.
    assert [len(e.order) for e in executions] == [96] * 6 + [64]
    assert all(e.split is dm.train and e.batch_size == 32 for e in executions)
    # A permutation: every image exactly once, and the order is shuffled.
    seen = torch.cat([e.order for e in executions])
    assert torch.equal(seen.sort().values, torch.arange(640)) and not torch.equal(seen, torch.arange(640))


def test_shuffle_depends_on_seed_and_epoch_only(tiny_mnist):
    def first_labels(seed, epoch):
        loader = datamodule(tiny_mnist, seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))[1]

    assert torch.equal(first_labels(0, 1), first_labels(0, 1))
    assert not torch.equal(first_labels(0, 0), first_labels(0, 1))
    assert not torch.equal(first_labels(0, 0), first_labels(1, 0))


def test_val_size_holds_out_seeded_training_images(tiny_mnist):
    dm = datamodule(tiny_mnist, val_size=100, seed=3)
    assert len(dm.train) == 540 and len(dm.val) == 100 and len(dm.test) == 160
    again = datamodule(tiny_mnist, val_size=100, seed=3)
    assert torch.equal(dm.val.tensors[0], again.val.tensors[0])


def test_eval_batches_are_plain_tensors_an_executions_worth_with_executions_on(tiny_mnist):
    images, labels = next(iter(datamodule(tiny_mnist).val_dataloader()))
    assert images.shape == (32, 784) and labels.shape == (32,)
    images, labels = next(iter(datamodule(tiny_mnist, FastDataModule, steps_per_execution=5).val_dataloader()))
    assert images.shape == (160, 784) and labels.shape == (160,)
