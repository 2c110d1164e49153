"""Adam's update through torch's functional Adam (torch.optim.adam.adam, the function Adam.step
calls), on Adam's own state, without the Python that Adam.step wraps it in (hooks, profiling,
dynamo's guards): for a small network that wrapping costs more than the fused update itself. The
numbers are Adam.step's.

Missing: a public description of Adam's state, which this writes (step, exp_avg, exp_avg_sq) and
whose settings it reads, as torch's Adam keeps them, and a public fused kernel for many small
calls (`fused_kernel`) (tests/test_internals.py fails naming what moved). StackedAdam
(nn/stacked.py) steps its networks through these functions."""

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.adam import adam

# The functional Adam's settings that a param group holds under the same names.
SETTINGS = (
    "weight_decay",
    "decoupled_weight_decay",
    "eps",
    "maximize",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
)


def moments(
    optimizer: torch.optim.Optimizer, group: dict[str, Any], params: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The first and second moments and the step counts of `params`, made as Adam makes them on
    its first step."""
    for p in params:
        state = optimizer.state[p]
        if not state:
            # Its count as torch's Adam keeps it: beside the tensors, in float32, for the fused
            # kernel; on the CPU otherwise.
            on_device = group["fused"] or group["capturable"]
            state["step"] = torch.tensor(
                0.0, dtype=torch.float32 if group["fused"] else None, device=p.device if on_device else "cpu"
            )
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    states = [optimizer.state[p] for p in params]
    return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states]


def settings(group: dict[str, Any]) -> dict[str, Any]:
    """The functional Adam's keyword settings for a param group, but its learning rate."""
    beta1, beta2 = group["betas"]
    return {key: group[key] for key in SETTINGS} | {"beta1": beta1, "beta2": beta2, "amsgrad": False}


def step_of(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """`optimizer`'s step: the functional one where every group can take it (torch's Adam or AdamW,
    fused, not capturable, without amsgrad, with every setting this reads: a torch before Adam's
    `decoupled_weight_decay` has not), else its own."""
    plain = type(optimizer) in (torch.optim.Adam, torch.optim.AdamW) and all(
        group["fused"]
        and not (group["capturable"] or group["amsgrad"] or group["differentiable"])
        and all(key in group for key in SETTINGS)
        for group in optimizer.param_groups
    )
    return functional_step(optimizer) if plain else optimizer.step


def functional_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            exp_avgs, exp_avg_sqs, steps = moments(optimizer, group, params)
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=group["lr"], **settings(group))

    return step


def fused_kernel(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: float,
    group: dict[str, Any],
) -> None:
    """The fused Adam kernel that the functional Adam's fused path calls, on tensors of one device
    and dtype whose step counts it has already counted: without that path's checks and grouping by
    device, which cost more than the kernel where StackedAdam calls it once per learning rate."""
    kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    beta1, beta2 = group["betas"]
    kernel(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        amsgrad=False,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        grad_scale=None,
        found_inf=None,
    )
