import csv
import json
import os

import lightning as L
import pytest
import torch

from mnist_lit import Classifier, fit
from mnist_lit.common.choices import PRECISIONS
from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.runs.build import restore
from tests.conftest import final_test_loss, last_weights

TINY = ("trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")


def read_metrics(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_run_leaves_metrics_history_summary_results_and_checkpoints(tiny_env, precision):
    """In each precision trainer.precision accepts, from the first epoch to the last file."""
    history = fit(*TINY, f"trainer.precision={precision}", output_dir="run")
    run = tiny_env / "run"
    rows = read_metrics(run)
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert [float(row["val_accuracy"]) for row in rows] == history["val_accuracy"]
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert (run / "history.png").read_bytes().startswith(b"\x89PNG")
    assert "Total params: 7,850" in (run / "summary.txt").read_text()
    results = json.loads((run / "results.json").read_text())
    assert results["parameters"] == 7850 and results["epochs"] == 2 and results["train_seconds"] > 0
    # Validation and test both use the official test split here, and the weights are the final ones.
    assert results["test_accuracy"] == pytest.approx(history["val_accuracy"][-1])
    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # the last epoch's


def test_tiny_data_is_learned(tiny_env):
    history = fit("trainer.max_epochs=3", "trainer.enable_progress_bar=false", output_dir="run")
    assert history["loss"][-1] < history["loss"][0]
    # Learnable, not to perfection (conftest.py): an untrained or broken network stays near 0.1.
    assert 0.65 < history["val_accuracy"][-1] < 0.9


def test_same_seed_gives_identical_metrics(tiny_env):
    first = fit(*TINY, "model=mlp", output_dir="a")
    second = fit(*TINY, "model=mlp", output_dir="b")
    other_seed = fit(*TINY, "model=mlp", "seed=1", output_dir="c")
    assert first == second
    assert first != other_seed
    a, b = last_weights(tiny_env / "a"), last_weights(tiny_env / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_exercises_change_the_network(tiny_env):
    fit(*TINY, "model.hidden=[16,16]", "model.activation=tanh", output_dir="run")
    text = (tiny_env / "run" / "summary.txt").read_text()
    assert "dense_2 (Linear)" in text and "tanh_2 (Tanh)" in text


def test_val_size_validates_on_held_out_training_images(tiny_env):
    history = fit(*TINY, "data.val_size=100", output_dir="run")
    run = tiny_env / "run"
    # 540 of the 640 training images trained: 17 mini-batches an epoch, not 20.
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 17
    held_out = MNISTDataModule(os.environ["MNIST_LIT_DATA"], val_size=100)  # data.seed: the run's seed, 0
    held_out.setup("fit")
    module = restore(run)
    with torch.no_grad():
        expected = module.loss(module.net(held_out.val.tensors[0]), held_out.val.tensors[1]).item()
    assert history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)
    results = json.loads((run / "results.json").read_text())
    assert results["test_loss"] == pytest.approx(final_test_loss(run, os.environ["MNIST_LIT_DATA"]), rel=1e-5)


def test_fit_without_output_dir_makes_a_new_one_under_outputs(tiny_env):
    fit(*TINY)
    fit(*TINY)
    runs = list((tiny_env / "outputs").glob("*/*"))
    assert len(runs) == 2 and all((run / "results.json").exists() for run in runs)


def test_predict_gives_class_probabilities(tiny_mnist):
    module = Classifier(hidden=[8])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    probabilities = torch.cat(trainer.predict(module, datamodule=MNISTDataModule(str(tiny_mnist))))
    assert probabilities.shape == (160, 10)
    assert torch.allclose(probabilities.sum(-1), torch.ones(160)) and (probabilities >= 0).all()


def test_epoch_losses_are_means_over_images_whatever_the_batching(tiny_env):
    """160 test images: one evaluation batch of 224, or two of 96 and 64, give the same val_loss."""
    one = fit(*TINY, "data.steps_per_execution=7", output_dir="one")
    two = fit(*TINY, "data.steps_per_execution=3", output_dir="two")
    for name in one:
        assert one[name] == pytest.approx(two[name], rel=1e-6)
    expected = final_test_loss(tiny_env / "two", os.environ["MNIST_LIT_DATA"])
    assert two["val_loss"][-1] == pytest.approx(expected, rel=1e-6)


def test_a_limit_of_0_skips_its_loop_and_the_run_still_ends_with_its_files(tiny_env, tiny_mnist, caplog):
    from mnist_lit.evaluate import evaluate

    held_out = ("data.val_size=100", "trainer.limit_val_batches=0", "trainer.limit_test_batches=0")
    with caplog.at_level("INFO"):
        history = fit(*TINY, *held_out, output_dir="run")
    run = tiny_env / "run"
    assert len(history["loss"]) == 2 and all(value != value for value in history["val_accuracy"])  # NaN: not run
    results = json.loads((run / "results.json").read_text())
    assert results["test_loss"] is None and results["test_accuracy"] is None and results["per_class_accuracy"] is None
    assert results["parameters"] == 7850 and results["epochs"] == 2
    assert not (run / "confusion_matrix.png").exists() and not (run / "mistakes.png").exists()
    assert "trainer.limit_test_batches=0: no test was run; results.json holds null" in caplog.text
    # evaluate measures whole splits, whatever limits the run trained with.
    for split, images in (("val", 100), ("test", 160)):
        (tiny_env / split).mkdir()
        measured = evaluate(str(run), split, str(tiny_mnist), tiny_env / split)
        assert measured["images"] == images and 0 < measured[f"{split}_loss"] < 10
