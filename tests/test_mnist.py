"""The tutorial's results on the real MNIST: run when MNIST_LIT_DATA points at it (CI does)."""

from pathlib import Path

import pytest

from mnist_lit import fit
from tests.conftest import REAL_DATA

pytestmark = [
    pytest.mark.mnist,
    pytest.mark.slow,
    pytest.mark.skipif(
        not REAL_DATA or not (Path(REAL_DATA) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
        reason="set MNIST_LIT_DATA to a directory holding MNIST/raw",
    ),
]


def test_logistic_regression_reaches_the_notebooks_accuracy(tmp_path):
    history = fit("model=logreg", "trainer.enable_progress_bar=false", output_dir=tmp_path)
    assert len(history["val_accuracy"]) == 10
    assert 0.920 <= history["val_accuracy"][-1] <= 0.935


def test_mlp_reaches_the_notebooks_accuracy(tmp_path):
    history = fit("model=mlp", "trainer.enable_progress_bar=false", output_dir=tmp_path)
    assert history["val_accuracy"][-1] >= 0.975


@pytest.mark.ddp
def test_mlp_on_two_cpu_processes_with_ddp(tmp_path):
    # Three epochs, not ten: DDP trains in Lightning's loop, one mini-batch a step.
    history = fit(
        "model=mlp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp_spawn",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=3",
        output_dir=tmp_path,
    )
    assert len(history["val_accuracy"]) == 3 and history["val_accuracy"][-1] >= 0.96
