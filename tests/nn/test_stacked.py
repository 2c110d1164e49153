"""A stack of networks trains each as it trains alone: StackedAdam steps each network with its own
learning rate as torch's Adam does, and StackedNetwork pads narrower networks and gives each its
own activation."""

import copy

import pytest
import torch
from torch import nn

from mnist_lit.nn.engine import Batched, Eager
from mnist_lit.nn.network import DenseNetwork
from mnist_lit.nn.stacked import StackedAdam, StackedNetwork, kept

LRS = (1e-3, 3e-3, 3e-2, 1e-2)
SHAPES = ((len(LRS), 5, 4), (len(LRS), 5))


@pytest.mark.parametrize("lrs", [LRS, (1e-3,) * len(LRS)], ids=["an lr each", "one lr"])
@pytest.mark.parametrize("fused", [None, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_each_network_is_stepped_as_torchs_adam_steps_it_alone_with_its_own_learning_rate(optimizer, fused, lrs):
    torch.manual_seed(0)
    stacked = [nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    alone = [[nn.Parameter(p[k].detach().clone()) for p in stacked] for k in range(len(LRS))]
    made = optimizer(stacked, eps=1e-7, fused=fused)
    ours = StackedAdam(stacked, list(lrs), **{key: value for key, value in made.defaults.items() if key != "lr"})
    theirs = [optimizer(params, lr=lr, eps=1e-7, foreach=False) for params, lr in zip(alone, lrs, strict=True)]
    # 30 steps apart, learning rates 30 times apart: any network stepped with another's would be off.
    for _ in range(30):
        grads = [torch.randn(shape) for shape in SHAPES]
        for p, grad in zip(stacked, grads, strict=True):
            p.grad = grad.clone()
        ours.step()
        for k, params in enumerate(alone):
            for p, grad in zip(params, grads, strict=True):
                p.grad = grad[k].clone()
            theirs[k].step()
    for k, params in enumerate(alone):
        for p, q in zip(stacked, params, strict=True):
            torch.testing.assert_close(p[k], q, rtol=1e-5, atol=1e-6)
        state, own = ours.state_dict()["state"], theirs[k].state_dict()["state"]
        for i in own:
            torch.testing.assert_close(state[i]["exp_avg_sq"][k], own[i]["exp_avg_sq"])
            assert state[i]["step"] == own[i]["step"] == 30


@pytest.fixture
def float64():
    """In float32, Adam's first steps turn rounding in a gradient near zero into a step of ±lr (a
    padded matmul sums in another order): float64 leaves only the algorithm to compare."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


# Sigmoid passes 0.5 on from a padded unit, so the padding's gradients must be masked; gelu, relu
# and tanh pass on zero, and their padding's gradients are zero unmasked.
@pytest.mark.parametrize("first", ["sigmoid", "gelu"])
def test_networks_of_other_widths_activations_and_learning_rates_train_in_one_stack_as_each_alone(float64, first):
    torch.manual_seed(0)
    nets = [
        DenseNetwork([64], first),
        DenseNetwork([100], "relu"),
        DenseNetwork([48], "relu"),
        DenseNetwork([32], "tanh"),
    ]
    alone = [copy.deepcopy(net) for net in nets]
    stack = StackedNetwork(nets)
    # The two relu networks side by side are activated as one slice.
    assert [[(start, stop) for _, start, stop in runs] for runs in stack.runs] == [[(0, 1), (1, 3), (3, 4)]]
    assert stack.masked == (first == "sigmoid")
    images, labels = torch.rand(320, 784), torch.randint(0, 10, (320,))
    orders = torch.stack([torch.randperm(len(images)) for _ in nets])
    together = Batched(stack, StackedAdam(stack.parameters(), list(LRS), eps=1e-7))(images, labels, orders, 32)
    for k, net in enumerate(alone):
        optimizer = torch.optim.Adam(net.parameters(), lr=LRS[k], eps=1e-7, foreach=False)
        own = Eager(net, nn.CrossEntropyLoss(), optimizer)(images, labels, orders[k], 32)
        # What the stack reports of network k (its History's loss and accuracy) is what k reports alone.
        torch.testing.assert_close(together.losses[k].float(), own.losses)  # Eager reports float32
        assert torch.equal(together.predictions[k], own.predictions) and torch.equal(together.labels[k], own.labels)
        mine = stack.state_of(k)
        assert mine.keys() == net.state_dict().keys()
        for name, tensor in net.state_dict().items():
            torch.testing.assert_close(mine[name], tensor, rtol=1e-10, atol=1e-12)
    # The narrowest network's padding (units 32 to 99) is still zero, in and out, after 10 steps.
    dense, bias, output = stack.stacked[0][3], stack.stacked[1][3], stack.stacked[2][3]
    assert not dense[32:].any() and not bias[32:].any() and not output[:, 32:].any()


def test_networks_of_one_width_need_no_mask_whatever_their_activation():
    assert not StackedNetwork([DenseNetwork([16], "sigmoid"), DenseNetwork([16], "sigmoid")]).masked


def test_a_stack_refuses_amsgrad_which_it_could_not_step_as_each_network_alone():
    with pytest.raises(ValueError, match="StackedAdam keeps no amsgrad maxima: stack without amsgrad"):
        StackedAdam([nn.Parameter(torch.zeros(2, 3))], [1e-3, 1e-2], amsgrad=True)


def test_networks_that_leave_a_stack_leave_the_others_training_as_each_alone(float64):
    """The widest network leaves after 5 steps: the stack shrinks to the widest that stays, and the
    three left take their next 5 steps, with their learning rates and Adam's moments, as alone."""
    torch.manual_seed(0)
    nets = [
        DenseNetwork([64], "relu"),
        DenseNetwork([100], "sigmoid"),
        DenseNetwork([48], "relu"),
        DenseNetwork([32], "relu"),
    ]
    alone = [copy.deepcopy(net) for net in nets]
    stack = StackedNetwork(nets)
    images, labels = torch.rand(320, 784), torch.randint(0, 10, (320,))
    orders = torch.stack([torch.randperm(len(images)) for _ in nets])
    optimizer = StackedAdam(stack.parameters(), list(LRS), eps=1e-7)
    Batched(stack, optimizer)(images, labels, orders[:, :160], 32)
    stays = [0, 2, 3]
    smaller, stepper = kept(stack, optimizer, stays, [copy.deepcopy(nets[k]) for k in stays], [LRS[k] for k in stays])
    assert smaller.stacked[0].shape == (3, 64, 784) and smaller.stacked[2].shape == (3, 10, 64)
    assert len(stepper.state) == len(smaller.stacked)
    Batched(smaller, stepper)(images, labels, orders[stays, 160:], 32)
    for i, k in enumerate(stays):
        net = alone[k]
        step = Eager(net, nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), lr=LRS[k], eps=1e-7, foreach=False))
        step(images, labels, orders[k], 32)
        for name, tensor in net.state_dict().items():
            torch.testing.assert_close(smaller.state_of(i)[name], tensor, rtol=1e-10, atol=1e-12)
