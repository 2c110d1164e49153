"""Lightning's contract: the DataModule feeds anyone's LightningModule, and the Classifier trains
from anyone's `(x, y)` batches, to the weights its own fast path reaches."""

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.lit.fast import FastClassifier, FastDataModule
from mnist_lit.lit.module import Classifier


class LitClassifier(L.LightningModule):
    """Shaped as Lightning's examples/pytorch/basics/backbone_image_classifier.py."""

    def __init__(self, hidden_dim: int = 128, learning_rate: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = torch.nn.Sequential(
            torch.nn.Linear(28 * 28, hidden_dim), torch.nn.ReLU(), torch.nn.Linear(hidden_dim, 10)
        )

    def forward(self, x):
        return self.backbone(x.view(x.size(0), -1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_acc", (self(x).argmax(-1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def trainer(**settings) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, **settings)


def test_a_lightning_users_module_trains_on_the_datamodule(tiny_mnist):
    datamodule = MNISTDataModule(str(tiny_mnist))
    datamodule.prepare_data()
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (32, 784) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (32,) and y.dtype == torch.int64
    L.seed_everything(0)
    fitted = trainer(max_epochs=3)
    fitted.fit(LitClassifier(), datamodule=MNISTDataModule(str(tiny_mnist)))
    # The tiny look-alikes: about 0.75 after two epochs for the tutorial's networks, chance is 0.1.
    assert 0.6 < fitted.callback_metrics["valid_acc"] < 0.95


def seeded(kind: type[Classifier]) -> Classifier:
    L.seed_everything(0)
    return kind(hidden=[100])


def test_the_classifier_in_lightnings_loop_reaches_the_fast_engines_weights(tiny_mnist):
    fast = seeded(FastClassifier)
    datamodule = FastDataModule(str(tiny_mnist), steps_per_execution=3)
    trainer(max_epochs=1).fit(fast, datamodule=datamodule)
    # The same epoch's order of images, from torchvision's own MNIST with a transform.
    order = list(datamodule.train_dataloader().sampler)
    images = MNIST(str(tiny_mnist), train=True, transform=transforms.ToTensor())
    theirs = seeded(Classifier)
    trainer(max_epochs=1).fit(theirs, DataLoader(images, batch_size=32, sampler=order))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast.parameters(), theirs.parameters(), strict=True))
    assert not torch.equal(fast.net.output.weight, seeded(Classifier).net.output.weight)
    assert theirs.trainer.global_step == fast.trainer.global_step == 20
