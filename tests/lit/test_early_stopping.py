"""early_stopping.patience: Keras's EarlyStopping, off by default, with restore_best_weights."""

import json

import pytest
import torch

from mnist_lit import fit
from tests.conftest import write_idx

QUIET = ("model=mlp", "trainer.max_epochs=8", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")
# After the first epoch no epoch improves val_loss by 10: the run stops `patience` epochs later.
NEVER_BETTER = ("early_stopping.patience=2", "early_stopping.min_delta=10")


def test_training_stops_patience_epochs_after_the_last_improvement(tiny_env):
    history = fit(*QUIET, *NEVER_BETTER, output_dir="run")
    assert len(history["loss"]) == 3
    assert (tiny_env / "run" / "metrics.csv").read_text().count("\n") == 1 + 3
    assert json.loads((tiny_env / "run" / "results.json").read_text())["epochs"] == 3


def test_it_is_off_by_default(tiny_env):
    assert len(fit(*QUIET, output_dir="run")["loss"]) == 8


@pytest.fixture
def noise(tmp_path, monkeypatch):
    """Random images with random labels: all a network can do is memorise, so val_loss rises."""
    raw = tmp_path / "noise" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 640), ("t10k", 160)):
        write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=generator))
        write_idx(raw / f"{split}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=generator))
    monkeypatch.setenv("MNIST_LIT_DATA", str(tmp_path / "noise"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("restore", [False, True])
def test_restore_best_weights_tests_the_best_epochs_weights(noise, restore):
    history = fit(
        *QUIET, "early_stopping.patience=2", f"early_stopping.restore_best_weights={restore}", output_dir="run"
    )
    best = min(history["val_loss"])
    assert history["val_loss"][-1] > best and len(history["loss"]) < 8
    results = json.loads((noise / "run" / "results.json").read_text())
    # Validation and test are the same images here, so the test loss is one epoch's val_loss.
    assert results["test_loss"] == pytest.approx(best if restore else history["val_loss"][-1], rel=1e-5)
    assert f"val_loss={best:.4f}" in results["best_checkpoint"]
