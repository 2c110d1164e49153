"""The captured form on a GPU: the eager path's numbers, Lightning's steps, one launch per execution.
Skipped where CUDA is absent (CI); run them with `pytest -m gpu` on a machine with a GPU."""

import pytest
import torch

from mnist_lit import fit
from mnist_lit.module import Diverged
from tests.conftest import REAL_DATA, last_weights
from tests.test_engine import TINY, GlobalStep, StepHooks

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
    assert eager_steps.form == "plain" and eager_steps.global_step == 60
    close(captured, eager)
    a, b = last_weights(tiny_env / "captured"), last_weights(tiny_env / "eager")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_a_listening_callback_gets_every_hook_on_the_gpu(tiny_env):
    hooks, steps = StepHooks(), GlobalStep()
    fit(*GPU, output_dir="run", callbacks=[hooks, steps])
    assert steps.form == "hooked" and hooks.calls == dict.fromkeys(hooks.calls, 60)


def test_max_steps_and_divergence_when_captured(tiny_env):
    steps = GlobalStep()
    fit(*GPU, "trainer.max_steps=7", output_dir="seven", callbacks=[steps])
    assert steps.global_step == 7
    with pytest.raises(Diverged, match="The loss became nan at epoch 1"):
        fit(*GPU, "optimizer.lr=1e30", output_dir="nan")


def test_bf16_mixed_captured_learns(tiny_env):
    history = fit(*GPU, "trainer.precision=bf16-mixed", output_dir="run")
    assert history["val_accuracy"][-1] > 0.9


def test_a_captured_run_resumes_and_a_gpu_checkpoint_loads_on_the_cpu(tiny_env):
    straight = fit(*GPU, output_dir="straight")
    fit(*GPU, "trainer.max_epochs=1", output_dir="first")
    resumed = fit(*GPU, "resume=first", output_dir="resumed")
    close(straight, resumed)
    on_cpu = fit(*TINY, "trainer.accelerator=cpu", "trainer.max_epochs=4", "resume=straight", output_dir="cpu")
    assert len(on_cpu["loss"]) == 4


@pytest.mark.mnist
@pytest.mark.skipif(not REAL_DATA, reason="set MNIST_LIT_DATA to the real MNIST")
def test_captured_mlp_on_mnist_matches_eager_within_0_002(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("model=mlp", "trainer.accelerator=gpu", "trainer.enable_progress_bar=false")
    captured = fit(*args, output_dir="captured")
    eager = fit(*args, "capture=false", output_dir="eager")
    assert captured["val_accuracy"][-1] == pytest.approx(eager["val_accuracy"][-1], abs=0.002)
    assert captured["val_accuracy"][-1] >= 0.975
