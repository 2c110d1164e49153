"""The captured form on a GPU: the eager path's numbers, Lightning's steps, one launch per execution.
Skipped where CUDA is absent (CI); run them with `pytest -m gpu` on a machine with a GPU."""

import json
import os

import lightning as L
import pytest
import torch

from mnist_lit import fit
from mnist_lit.lit.module import Diverged
from mnist_lit.nn.engine import batches
from tests.conftest import REAL_DATA, cli, last_weights, multirun_in_process
from tests.nn.test_engine import TINY, GlobalStep, StepHooks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GPU = (*TINY, "trainer.accelerator=gpu", "trainer.max_epochs=3")


def close(a: dict[str, list[float]], b: dict[str, list[float]]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=2e-3, rel=1e-3), name


def test_captured_runs_give_the_eager_numbers(tiny_env):
    steps = GlobalStep()
    captured = fit(*GPU, output_dir="captured", callbacks=[steps])
    assert steps.form == "captured" and steps.global_step == 60
    eager_steps = GlobalStep()
    eager = fit(*GPU, "capture=false", output_dir="eager", callbacks=[eager_steps])
    assert eager_steps.form == "eager" and eager_steps.global_step == 60
    close(captured, eager)
    a, b = last_weights(tiny_env / "captured"), last_weights(tiny_env / "eager")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_the_captured_fast_engine_gives_lightnings_loops_numbers(tiny_env):
    steps = GlobalStep()
    captured = fit(*GPU, "engine=fast", output_dir="fast", callbacks=[steps])
    assert steps.form == "captured"
    close(captured, fit(*GPU, "engine=lightning", output_dir="lightning"))


def test_a_listening_callback_gets_every_hook_on_the_gpu(tiny_env):
    hooks, steps = StepHooks(), GlobalStep()
    fit(*GPU, output_dir="run", callbacks=[hooks, steps])
    assert steps.form == "lightning" and hooks.calls == dict.fromkeys(hooks.calls, 60)


def test_max_steps_in_lightnings_loop_and_divergence_when_captured(tiny_env):
    steps = GlobalStep()
    fit(*GPU, "trainer.max_steps=7", output_dir="seven", callbacks=[steps])
    assert steps.form == "lightning" and steps.global_step == 7
    with pytest.raises(Diverged, match="The loss became nan at epoch 1"):
        fit(*GPU, "optimizer.lr=1e30", output_dir="nan")


@pytest.mark.parametrize(
    "settings",
    [
        ["trainer.precision=bf16-mixed"],
        ["trainer.precision=bf16-true"],
        # Validation after half an epoch's executions, between two replays.
        ["trainer.val_check_interval=0.5"],
    ],
    ids=lambda settings: " ".join(s.removeprefix("trainer.") for s in settings),
)
def test_captured_gives_the_eager_numbers_in_every_setting_the_engine_takes(tiny_env, settings):
    steps = GlobalStep()
    captured = fit(*GPU, *settings, output_dir="captured", callbacks=[steps])
    assert steps.form == "captured"
    eager = fit(*GPU, *settings, "capture=false", output_dir="eager")
    close(captured, eager)


class NoHostSync(L.Callback):
    """From the second epoch on, when every execution replays a recorded graph: any step that makes
    the host wait for the device (an .item(), a blocking copy, a stream synchronize) raises."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch > 0:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


def test_a_replayed_execution_never_makes_the_host_wait(tiny_env):
    replays = Replays()
    try:
        fit(*GPU, output_dir="run", callbacks=[NoHostSync(), replays])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert replays.replays == 3 * 7 - 2


@pytest.mark.parametrize(
    "settings",
    [
        ["trainer.detect_anomaly=true"],
        ["trainer.precision=bf16-mixed", "trainer.gradient_clip_val=0.5"],
        ["trainer.accumulate_grad_batches=3", "trainer.gradient_clip_val=0.05"],
    ],
    ids=lambda settings: " ".join(s.removeprefix("trainer.") for s in settings),
)
def test_what_the_fast_engine_does_not_do_trains_in_lightnings_loop_on_the_gpu(tiny_env, settings):
    steps = GlobalStep()
    fit(*GPU, *settings, output_dir="run", callbacks=[steps])
    accumulated = 3 if "trainer.accumulate_grad_batches=3" in settings else 1
    assert steps.form == "lightning" and steps.global_step == batches(20, accumulated) * 3


def test_a_stacked_sweep_trains_and_tests_on_the_gpu(tiny_mnist, tmp_path, monkeypatch, capsys):
    sweep = ["hydra/launcher=stacked", "seed=0,1", *GPU]
    line, printed = multirun_in_process(sweep, tmp_path, tiny_mnist, monkeypatch, capsys)
    assert line is None, printed.err
    [directory] = tmp_path.glob("outputs/multirun/*/*")
    for job in ("0", "1"):
        assert not (directory / job / "error.txt").exists()
        assert json.loads((directory / job / "results.json").read_text())["test_accuracy"] > 0.3


class Replays(L.Callback):
    """Counts CUDA graph replays; from the second epoch on, sets the learning rate to 0 as torch's
    schedulers do (fill_ on a tensor) and poisons a weight at the third, if asked."""

    def __init__(self, poison: bool = False) -> None:
        self.replays, self.poison = 0, poison

    def on_train_start(self, trainer, module):
        replay = torch.cuda.CUDAGraph.replay

        def counted(graph):
            self.replays += 1
            return replay(graph)

        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(torch.cuda.CUDAGraph, "replay", counted)

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            self.before = {k: v.clone() for k, v in module.net.state_dict().items()}
            for group in module.optimizers().optimizer.param_groups:
                group["lr"].fill_(0.0)
        if trainer.current_epoch == 2 and self.poison:
            with torch.no_grad():
                module.net.output.weight[0, 0] = float("nan")

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 1:
            self.after = {k: v.clone() for k, v in module.net.state_dict().items()}

    def on_train_end(self, trainer, module):
        self.patch.undo()


def test_every_execution_after_the_first_is_a_replay_that_follows_the_learning_rate(tiny_env):
    replays = Replays()
    fit(*GPU, output_dir="run", callbacks=[replays])
    # 640 images, 32 a mini-batch, 3 mini-batches an execution (TINY): 7 executions an epoch, 6 of 3
    # mini-batches and 1 of 2. The first of each length runs eagerly and is recorded; the rest replay.
    assert replays.replays == 3 * 7 - 2
    assert all(torch.equal(replays.before[k], replays.after[k]) for k in replays.before)  # lr 0: no step moved them


def test_a_loss_that_turns_nan_during_a_replay_stops_the_run(tiny_env):
    replays = Replays(poison=True)
    with pytest.raises(Diverged, match="The loss became nan at epoch 3, mini-batch 1"):
        fit(*GPU, output_dir="run", callbacks=[replays])
    assert replays.replays > 5


def test_a_captured_run_resumed_with_another_learning_rate_steps_with_it(tiny_env):
    fit(*GPU, "trainer.max_epochs=1", output_dir="first")
    fit(*GPU, "trainer.max_epochs=2", "optimizer.lr=1e-12", "resume=first", output_dir="resumed")
    a, b = last_weights(tiny_env / "first"), last_weights(tiny_env / "resumed")
    # lr 1e-12: Adam's steps are at most about 1e-12 each, 20 of them.
    assert all(torch.allclose(a[k].cpu(), b[k].cpu(), atol=1e-9) for k in a)


def test_a_captured_run_resumes_and_a_gpu_checkpoint_resumes_where_cuda_is_absent(tiny_env, monkeypatch):
    straight = fit(*GPU, output_dir="straight")
    fit(*GPU, "trainer.max_epochs=1", output_dir="first")
    resumed = fit(*GPU, "resume=first", output_dir="resumed")
    close(straight, resumed)
    # A process that sees no GPU, as a laptop after a GPU machine.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    on_cpu = [*TINY, "trainer.accelerator=cpu", "trainer.max_epochs=4", "resume=straight", "hydra.run.dir=cpu"]
    done = cli(on_cpu, tiny_env, os.environ["MNIST_LIT_DATA"])
    assert done.returncode == 0, done.stderr
    assert len((tiny_env / "cpu" / "metrics.csv").read_text().splitlines()) == 1 + 4


@pytest.mark.mnist
@pytest.mark.skipif(not REAL_DATA, reason="set MNIST_LIT_DATA to the real MNIST")
def test_captured_mlp_on_mnist_matches_eager_within_0_002(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("model=mlp", "trainer.accelerator=gpu", "trainer.enable_progress_bar=false")
    captured = fit(*args, output_dir="captured")
    eager = fit(*args, "capture=false", output_dir="eager")
    assert captured["val_accuracy"][-1] == pytest.approx(eager["val_accuracy"][-1], abs=0.002)
    assert captured["val_accuracy"][-1] >= 0.975


def test_the_captured_check_notices_a_graph_that_never_replays(tiny_env, monkeypatch):
    """The claim "captured = eager" is checked by close(); with replays skipped it must fail."""
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: None)
    captured = fit(*GPU, output_dir="captured")
    eager = fit(*GPU, "capture=false", output_dir="eager")
    with pytest.raises(AssertionError):
        close(captured, eager)
