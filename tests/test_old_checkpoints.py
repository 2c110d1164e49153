"""A checkpoint saved before the package took its layers (nn/, lit/) names its classes where they
were then (mnist_lit.network.DenseNetwork, ...): it still loads, predicts, evaluates and trains on.

tests/fixtures/made-before-the-layers.ckpt was written by commit 6bed799 with
fit("model=mlp", "model.hidden=[8]", "trainer.max_epochs=1", "loss=categorical") on the tiny
data of conftest.make_mnist()."""

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from mnist_lit import Classifier, fit, load
from mnist_lit.evaluate import evaluate
from mnist_lit.lit.data import MNISTDataModule

OLD = Path(__file__).parent / "fixtures" / "made-before-the-layers.ckpt"
SAME_RUN = ("model=mlp", "model.hidden=[8]", "loss=categorical", "trainer.enable_progress_bar=false")


def test_an_old_checkpoint_names_classes_that_moved():
    saved = torch.load(OLD, weights_only=True)["hyper_parameters"]
    assert saved["model"]["_target_"] == "mnist_lit.network.DenseNetwork"
    assert saved["loss"]["_target_"] == "mnist_lit.loss.CategoricalCrossentropy"
    assert saved["data"]["_target_"] == "mnist_lit.data.MNISTDataModule"


def test_an_old_checkpoint_predicts_what_its_weights_compute(tiny_mnist):
    data = MNISTDataModule(str(tiny_mnist))
    data.setup("test")
    images = data.test.tensors[0]
    weights = {k.removeprefix("net."): v for k, v in torch.load(OLD, weights_only=True)["state_dict"].items()}
    hidden = F.relu(images @ weights["dense_1.weight"].T + weights["dense_1.bias"])
    expected = (hidden @ weights["output.weight"].T + weights["output.bias"]).softmax(-1)
    assert torch.allclose(load(OLD).predict(images), expected, atol=1e-6)
    assert torch.allclose(Classifier.load_from_checkpoint(OLD)(images).softmax(-1), expected, atol=1e-6)


def test_an_old_checkpoint_evaluates_and_trains_on_as_an_uninterrupted_run(tiny_env, tiny_mnist):
    (tiny_env / "evaluated").mkdir()
    results = evaluate(str(OLD), "test", str(tiny_mnist), tiny_env / "evaluated")
    straight = fit(*SAME_RUN, "trainer.max_epochs=2", output_dir="straight")
    # The saved epoch is the first of the same training, and evaluating it gives its val_ numbers.
    assert results["test_loss"] == pytest.approx(straight["val_loss"][0], rel=1e-5)
    resumed = fit(*SAME_RUN, "trainer.max_epochs=2", f"resume={OLD}", output_dir="resumed")
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-5)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
