"""The training engine keeps Lightning's meaning of a step: global_step counts optimizer steps
(mini-batches), and what listens to each step trains in Lightning's loop, which calls every hook."""

import lightning as L
import pytest
import torch

from mnist_lit import fit
from mnist_lit.common.errors import ConfigError
from mnist_lit.lit.saving import CHECKSUM, checksum
from mnist_lit.nn.engine import Captured, Eager
from mnist_lit.nn.loss import CategoricalCrossentropy
from mnist_lit.nn.network import DenseNetwork
from tests.conftest import last_weights

# 640 tiny training images: 20 mini-batches of 32 an epoch, in executions of 3 (the last one of 2).
TINY = ("model=mlp", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=3")


class StepHooks(L.Callback):
    def __init__(self) -> None:
        self.calls = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0}
        self.autocast_in_backward: set[bool] = set()

    def on_before_backward(self, trainer, module, loss):
        self.calls["on_before_backward"] += 1
        self.autocast_in_backward.add(torch.is_autocast_enabled("cpu"))

    def on_after_backward(self, trainer, module):
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.calls["on_before_optimizer_step"] += 1


class GlobalStep(L.Callback):
    def on_train_end(self, trainer, module):
        self.global_step = trainer.global_step
        captured = getattr(module, "captured", None)  # None: the plain Classifier, in Lightning's loop
        self.form = "lightning" if captured is None else "captured" if captured else "eager"


def test_a_callback_that_listens_to_steps_trains_in_lightnings_loop_and_hears_each(tiny_env, caplog):
    caplog.set_level("INFO")
    hooks, steps = StepHooks(), GlobalStep()
    fit(*TINY, output_dir="run", callbacks=[hooks, steps])
    assert hooks.calls == dict.fromkeys(hooks.calls, 40)
    assert steps.form == "lightning" and steps.global_step == 40
    assert "the fast engine does not do StepHooks's on_before_backward, StepHooks's on_after_backward" in caplog.text
    with pytest.raises(
        ConfigError, match="^engine=fast does not do StepHooks's on_before_backward, .*: leave engine=auto"
    ):
        fit(*TINY, "engine=fast", output_dir="fast", callbacks=[StepHooks()])


def test_max_steps_stops_at_that_mini_batch_in_lightnings_loop(tiny_env):
    steps, hooks = GlobalStep(), StepHooks()
    fit(*TINY, "trainer.max_steps=7", output_dir="run", callbacks=[steps, hooks])
    assert steps.form == "lightning" and steps.global_step == 7
    assert hooks.calls["on_before_optimizer_step"] == 7
    # Seven Adam steps: the same weights as eight steps stopped one early would not be.
    eight = fit(*TINY, "trainer.max_steps=8", output_dir="eight")
    assert len(eight["loss"]) == 1
    a, b = last_weights(tiny_env / "run"), last_weights(tiny_env / "eight")
    assert not torch.equal(a["net.output.weight"], b["net.output.weight"])


def test_bf16_autocast_covers_forward_and_loss_not_backward(tiny_env):
    hooks = StepHooks()
    forward_autocast = set()
    net_dtypes = set()

    class Watch(L.Callback):
        def on_train_start(self, trainer, module):
            def record(net, inputs, output):
                forward_autocast.add(torch.is_autocast_enabled("cpu"))
                net_dtypes.add(output.dtype)

            self.handle = module.net.register_forward_hook(record)

        def on_train_end(self, trainer, module):
            self.handle.remove()

    history = fit(*TINY, "trainer.precision=bf16-mixed", output_dir="run", callbacks=[hooks, Watch()])
    assert forward_autocast == {True} and net_dtypes == {torch.bfloat16}
    assert hooks.autocast_in_backward == {False}
    # bf16's forward pass rounds, the rest is float32: the same training, to bf16's precision.
    full = fit(*TINY, output_dir="full")
    assert history["val_loss"] == pytest.approx(full["val_loss"], rel=2e-2) and history["val_loss"] != full["val_loss"]


def test_an_eager_execution_is_the_hand_written_loop():
    torch.manual_seed(0)
    images, labels = torch.rand(100, 784), torch.randint(0, 10, (100,))
    order = torch.randperm(100)
    nets = [DenseNetwork([16]) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [torch.optim.Adam(net.parameters(), eps=1e-7) for net in nets]
    outcome = Eager(nets[0], CategoricalCrossentropy(), optimizers[0])(images, labels, order, 32)
    losses = []
    for index in order.split(32):  # 32, 32, 32 and the last 4
        loss = CategoricalCrossentropy()(nets[1](images[index]), labels[index])
        optimizers[1].zero_grad()
        loss.backward()
        optimizers[1].step()
        losses.append(loss.detach())
    assert torch.equal(outcome.losses, torch.stack(losses))
    assert torch.equal(outcome.labels, labels[order]) and outcome.predictions.shape == (100,)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True))


@pytest.mark.parametrize(
    "flags",
    [
        {"capturable": True, "fused": True},
        {"capturable": True},
        {"capturable": True, "fused": True, "lr": torch.tensor(1e-3)},
    ],
)
def test_a_checkpoint_of_a_captured_gpu_run_resumes_on_a_cpu(tiny_env, flags, monkeypatch):
    """A captured GPU run's Adam is capturable (and fused), and every tensor it saves says it lies on
    the GPU; a CPU run, on a machine without one, resumes it stepping its own way."""
    fit(*TINY, "trainer.max_epochs=1", output_dir="gpu")
    path = tiny_env / "gpu" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    for group in checkpoint["optimizer_states"][0]["param_groups"]:
        group.update(flags)
    checkpoint[CHECKSUM] = checksum(checkpoint)  # as that run wrote it
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(checkpoint, path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
            torch.load(path, weights_only=True)
    fit(*TINY, "resume=gpu", output_dir="cpu")
    fit(*TINY, output_dir="straight")
    assert (tiny_env / "cpu" / "metrics.csv").read_text() == (tiny_env / "straight" / "metrics.csv").read_text()


def test_a_captured_executions_graphs_are_dropped_when_the_optimizer_state_is_replaced():
    """A CUDA graph replays on the tensors it recorded; loading an optimizer state replaces Adam's."""
    net = DenseNetwork([8])
    optimizer = torch.optim.Adam(net.parameters())
    captured = Captured(Eager(net, CategoricalCrossentropy(), optimizer))
    captured.graphs[("recorded before",)] = None
    optimizer.load_state_dict(optimizer.state_dict())
    assert captured.graphs == {}
