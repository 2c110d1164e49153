"""nn/adam.py: the fast engine steps torch's fused Adam and AdamW through the functional Adam, with
the numbers of their own step, and any other optimizer through its own step."""

import pytest
import torch
from torch import nn

from mnist_lit.nn.adam import step_of


class OwnAdam(torch.optim.Adam):
    """A user's Adam, whose step may differ from torch's."""


@pytest.mark.parametrize(
    ("make", "functional"),
    [
        (lambda params: torch.optim.Adam(params, eps=1e-7, fused=True), True),
        (lambda params: torch.optim.AdamW(params, weight_decay=0.1, fused=True), True),
        (lambda params: torch.optim.Adam(params, amsgrad=True, fused=True), False),
        (lambda params: torch.optim.Adam(params, foreach=False), False),
        (lambda params: OwnAdam(params, fused=True), False),
        (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9), False),
    ],
    ids=["Adam", "AdamW", "amsgrad", "unfused", "a subclass", "SGD"],
)
def test_each_optimizer_steps_as_its_own_step_and_fused_adam_without_its_wrapping(make, functional):
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 3), nn.Linear(6, 3)
    theirs.load_state_dict(ours.state_dict())
    optimizer, reference = make(ours.parameters()), make(theirs.parameters())
    step = step_of(optimizer)
    assert (step != optimizer.step) == functional
    for _ in range(5):
        x = torch.randn(8, 6)
        for net, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            net(x).square().sum().backward()
        step()
        reference.step()
    for mine, own in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, own)
