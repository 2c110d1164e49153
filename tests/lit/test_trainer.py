"""The whole Trainer as `trainer.<name>=...`: every argument of lightning.Trainer is a setting, and
those that count batches or change the step (clipping, accumulation, limits, fast_dev_run,
deterministic) act as a Lightning user expects, counted in mini-batches, whichever engine trains."""

import csv
import dataclasses
import inspect
import json
import math

import lightning as L
import pytest
import torch

from mnist_lit import fit
from mnist_lit.common.choices import OWNED_BY_PROJECT
from mnist_lit.common.errors import ConfigError
from mnist_lit.config.schema import TrainerConfig
from tests.conftest import last_weights

# 640 tiny training images: 20 mini-batches of 32 an epoch, in executions of 4.
TINY = ("model=mlp", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")

# Where mnist_lit's default is not Lightning's, and why (see TrainerConfig's comments).
OURS = {"devices": 1, "max_epochs": 10, "precision": "32-true", "enable_model_summary": False}


def test_every_trainer_argument_is_a_setting_with_lightnings_default():
    signature = inspect.signature(L.Trainer.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(TrainerConfig) if f.name != "_target_"}
    assert set(fields) | set(OWNED_BY_PROJECT) == set(signature) - {"self"}
    assert {name: default for name, default in fields.items() if default != signature[name].default} == OURS


class Observe(L.Callback):
    """What the optimizer saw and the loops ran."""

    def __init__(self) -> None:
        self.gradient_norms, self.gradient_maxima, self.val_images = [], [], 0
        self.deterministic = None

    def on_train_start(self, trainer, module):
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        # What the optimizer stepped with: after Lightning's clipping, which follows on_before_optimizer_step.
        module.optimizers().optimizer.register_step_post_hook(lambda optimizer, *_: self.gradients(module))

    def gradients(self, module):
        grads = [p.grad for p in module.parameters()]
        self.gradient_norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        self.gradient_maxima.append(max(g.abs().max().item() for g in grads))

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val_images += len(batch[1])

    def on_train_end(self, trainer, module):
        self.global_step = trainer.global_step


def test_a_test_limit_covers_the_same_images_in_the_metrics_and_the_pictures(tiny_env):
    fit(*TINY, "trainer.limit_test_batches=2", output_dir="run")
    results = json.loads((tiny_env / "run" / "results.json").read_text())
    with open(tiny_env / "run" / "confusion_matrix.csv") as f:
        counted = sum(int(v) for row in csv.DictReader(f) for k, v in row.items() if k != "true \\ predicted")
    assert counted == 64  # two mini-batches of 32 of the 160 test images
    expected = final_loss_of(tiny_env / "run", 64)
    assert results["test_loss"] == pytest.approx(expected, rel=1e-6)


def test_a_test_limit_that_keeps_no_batch_is_refused_in_one_line_after_a_kept_training(tiny_env):
    with pytest.raises(ConfigError) as refused:
        fit(*TINY, "trainer.max_epochs=1", "trainer.limit_test_batches=0.1", output_dir="run")
    line = str(refused.value)
    assert line.startswith("Lightning's Trainer refuses") and "0.1 * 5 < 1" in line and "\n" not in line
    assert line.endswith("the training is kept: python -m mnist_lit.evaluate checkpoint=run tests it")
    assert (tiny_env / "run" / "checkpoints" / "last.ckpt").exists()


def final_loss_of(run, images: int) -> float:
    import os

    from mnist_lit.lit.data import MNISTDataModule
    from mnist_lit.runs.build import restore

    module = restore(run)
    datamodule = MNISTDataModule(os.environ["MNIST_LIT_DATA"])
    datamodule.setup("test")
    x, y = (tensor[:images] for tensor in datamodule.test.tensors)
    with torch.no_grad():
        return module.loss(module.net(x), y).item()


@pytest.mark.parametrize(("algorithm", "measure"), [("norm", "gradient_norms"), ("value", "gradient_maxima")])
def test_gradient_clipping_bounds_what_the_optimizer_steps_with(tiny_env, algorithm, measure):
    clip = ("trainer.gradient_clip_val=0.01", f"trainer.gradient_clip_algorithm={algorithm}")
    observe = Observe()
    clipped = fit(*TINY, *clip, output_dir="clipped", callbacks=[observe])
    assert max(getattr(observe, measure)) <= 0.01 * 1.0001 and len(observe.gradient_norms) == 40
    unclipped = fit(*TINY, output_dir="unclipped")
    assert unclipped["loss"] != clipped["loss"]


def test_accumulating_four_mini_batches_steps_as_a_batch_four_times_larger(tiny_env):
    observe = Observe()
    fit(*TINY, "trainer.accumulate_grad_batches=4", output_dir="accumulated", callbacks=[observe])
    assert observe.global_step == 10 and len(observe.gradient_norms) == 10  # 20 mini-batches / 4, two epochs
    # The same images in the same groups: 4 mini-batches of 32 are the 128-image batches of one.
    fit(*TINY, "data.batch_size=128", "data.steps_per_execution=1", output_dir="large")
    a, b = (last_weights(tiny_env / run) for run in ("accumulated", "large"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_limits_count_mini_batches_and_images_as_lightning_users_mean_them(tiny_env):
    observe = Observe()
    history = fit(
        *TINY, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", output_dir="run", callbacks=[observe]
    )
    assert observe.global_step == 6 and len(history["loss"]) == 2
    assert observe.val_images == 2 * 2 * 32  # two epochs of two mini-batches
    fraction = Observe()
    fit(
        *TINY,
        "trainer.limit_train_batches=0.25",
        "trainer.limit_val_batches=0",
        output_dir="fraction",
        callbacks=[fraction],
    )
    assert fraction.global_step == 2 * 5 and fraction.val_images == 0


def test_fast_dev_run_runs_one_mini_batch_through_every_stage_and_keeps_nothing(tiny_env):
    observe = Observe()
    history = fit(
        "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false", output_dir="run", callbacks=[observe]
    )
    assert observe.global_step == 1 and len(history["loss"]) == 1
    assert not (tiny_env / "run" / "checkpoints").exists()
    results = json.loads((tiny_env / "run" / "results.json").read_text())
    # The test ran one mini-batch of 32 images: its accuracy is a whole number of them.
    assert (
        round(results["test_accuracy"] * 32, 4) == int(round(results["test_accuracy"] * 32))
        and results["best_checkpoint"] == ""
    )
    assert (
        sum(
            int(v)
            for row in csv.DictReader(open(tiny_env / "run" / "confusion_matrix.csv"))
            for k, v in row.items()
            if k != "true \\ predicted"
        )
        == 32
    )


def test_deterministic_turns_torch_deterministic_algorithms_on(tiny_env):
    observe = Observe()
    first = fit(*TINY, "trainer.deterministic=true", output_dir="first", callbacks=[observe])
    assert observe.deterministic
    assert fit(*TINY, "trainer.deterministic=true", output_dir="second") == first


def test_epochs_without_validation_record_no_validation_values(tiny_env):
    history = fit(*TINY, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", output_dir="run")
    assert [math.isnan(value) for value in history["val_loss"]] == [True, False, True]


def test_max_time_stops_the_run_with_its_files_written(tiny_env):
    history = fit(*TINY, "trainer.max_time=00:00:00:00", output_dir="run")
    assert history["loss"] == [] and (tiny_env / "run" / "results.json").exists()


def test_without_checkpointing_a_run_writes_no_checkpoints(tiny_env):
    history = fit(*TINY, "trainer.enable_checkpointing=false", output_dir="run")
    assert len(history["loss"]) == 2 and not (tiny_env / "run" / "checkpoints").exists()


def test_val_check_interval_counts_mini_batches(tiny_env):
    observe = Observe()
    fit(*TINY, "trainer.max_epochs=1", "trainer.val_check_interval=8", output_dir="run", callbacks=[observe])
    assert observe.val_images == 2 * 160  # after mini-batches 8 and 16 of 20
