"""K networks of one depth as one, for the engine's Batched form (the stacked launcher), and the
Adam that steps them with a learning rate each."""

from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam

from mnist_lit.nn.adam import fused_kernel, moments, settings


class StackedNetwork(nn.Module):
    """K DenseNetworks of one depth as one: each Dense layer's K weight matrices one (K, out, in)
    tensor, its K biases one (K, out), in the order each network lists its own parameters.

    Networks of different widths are padded to the widest with units whose weights in and out are
    zero and stay zero: each network computes what it computes alone, whatever its activation makes
    of a zero (sigmoid's 0.5 meets outgoing weights of zero). Where every activation makes zero of
    zero (relu, tanh, gelu, ...), the padding's gradients are zero, so its Adam moments and steps are
    too; otherwise `mask_gradients`, before each optimizer step, zeroes them. Each network's hidden
    layers go through its own activation."""

    def __init__(self, nets: list[nn.Sequential]) -> None:
        super().__init__()
        self.dense = [name for name, layer in nets[0].named_children() if isinstance(layer, nn.Linear)]
        linears = [[getattr(net, name) for name in self.dense] for net in nets]
        # Each network's own (out, in) per Dense layer, and the widest of each.
        self.shapes = [[tuple(layer.weight.shape) for layer in layers] for layers in linears]
        widest = [tuple(max(sizes) for sizes in zip(*column, strict=True)) for column in zip(*self.shapes, strict=True)]
        tensors = []
        dtype = linears[0][0].weight.dtype
        for i, (rows, columns) in enumerate(widest):
            weight = torch.zeros(len(nets), rows, columns, dtype=dtype)
            bias = torch.zeros(len(nets), rows, dtype=dtype)
            for k, layers in enumerate(linears):
                out, into = self.shapes[k][i]
                weight[k, :out, :into] = layers[i].weight.detach()
                bias[k, :out] = layers[i].bias.detach()
            tensors += [weight, bias]
        self.stacked = nn.ParameterList(nn.Parameter(tensor) for tensor in tensors)
        # A padded unit passes on its activation of zero, to outgoing weights whose gradient that
        # value scales: where it is zero, the padding's gradients are zero with no mask to apply.
        zero = torch.zeros(1, dtype=dtype)
        self.masked = any(shapes != self.shapes[0] for shapes in self.shapes) and any(
            bool(layer(zero).ne(0).any())
            for net in nets
            for layer in net.children()
            if not isinstance(layer, nn.Linear)
        )
        # Buffers, not persistent ones, so that they move with the stack and stay out of its
        # checkpoints, which are each network's own (Stack.on_save_checkpoint).
        for j, tensor in enumerate(tensors if self.masked else []):
            mask = torch.zeros_like(tensor)
            for k in range(len(nets)):
                mask[k][self.place(k, j)] = 1
            self.register_buffer(f"mask_{j}", mask, persistent=False)
        # For each hidden layer, the runs of neighbouring networks that share an activation: each run
        # activated as one slice of the stack, the runs joined by one cat (gathering and scattering
        # each activation's networks by index costs more, backward most of all).
        activations = [[layer for layer in net.children() if not isinstance(layer, nn.Linear)] for net in nets]
        self.runs: list[list[tuple[nn.Module, int, int]]] = []
        for column in zip(*activations, strict=True):
            runs: list[tuple[nn.Module, int, int]] = []
            for k, activation in enumerate(column):
                if runs and type(runs[-1][0]) is type(activation):
                    runs[-1] = (runs[-1][0], runs[-1][1], k + 1)
                else:
                    runs.append((activation, k, k + 1))
            self.runs.append(runs)
        # Modules, so that train() and eval() reach them as they reach each network's own.
        self.activations = nn.ModuleList(module for runs in self.runs for module, _, _ in runs)

    def place(self, k: int, j: int) -> tuple[slice, ...]:
        """Where network k's own part of stacked tensor j (a weight, then a bias, per layer) lies in slice k."""
        out, into = self.shapes[k][j // 2]
        return (slice(0, out), slice(0, into)) if j % 2 == 0 else (slice(0, out),)

    def own(self, k: int, j: int, tensor: torch.Tensor) -> torch.Tensor:
        """Network k's own part of `tensor`, shaped as stacked tensor j (its weights, its Adam moments)."""
        return tensor[k][self.place(k, j)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, n, 784) → (K, n, 10) logits, by batched matmuls.

        Computed transposed, weight @ xᵀ, so that each weight's gradient comes out of backward in
        the weight's own (out, in) layout: x @ weightᵀ gives it as (in, out) transposed, which
        autograd then copies into the weight's layout at every step (half the step's time)."""
        x = x.transpose(1, 2)
        for i in range(len(self.dense)):
            weight, bias = self.stacked[2 * i], self.stacked[2 * i + 1]
            x = torch.baddbmm(bias.unsqueeze(2), weight, x)
            if i < len(self.runs):
                x = self._activate(x, self.runs[i])
        return x.transpose(1, 2)

    def _activate(self, x: torch.Tensor, runs: list[tuple[nn.Module, int, int]]) -> torch.Tensor:
        if len(runs) == 1:
            return runs[0][0](x)  # type: ignore[no-any-return]  # an activation module returns a tensor
        return torch.cat([module(x[start:stop]) for module, start, stop in runs])

    def mask_gradients(self) -> None:
        """Keep the padding's weights at zero: no gradient, so no Adam moment, no step."""
        if self.masked:
            for j, parameter in enumerate(self.stacked):
                if parameter.grad is not None:
                    parameter.grad.mul_(getattr(self, f"mask_{j}"))

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Network k's state_dict, as its own network names it."""
        return {
            f"{name}.{kind}": self.own(k, 2 * i + j, self.stacked[2 * i + j]).detach().clone()
            for i, name in enumerate(self.dense)
            for j, kind in enumerate(("weight", "bias"))
        }


def kept(
    net: StackedNetwork, optimizer: "StackedAdam", networks: list[int], modules: list[nn.Sequential], lrs: list[float]
) -> tuple[StackedNetwork, "StackedAdam"]:
    """Networks `networks` of `net` as a stack of their own, padded only as wide as they need, and
    the Adam that goes on stepping them as `optimizer` would: their weights, learning rates `lrs` and
    moments. `modules`: each kept network's own module (its layers and activation), whose weights
    become its current ones."""
    for k, module in zip(networks, modules, strict=True):
        module.load_state_dict(net.state_of(k))
    smaller = StackedNetwork(modules).to(net.stacked[0].device)
    defaults = {key: value for key, value in optimizer.defaults.items() if key != "lr"}
    stepper = StackedAdam(smaller.parameters(), lrs, **defaults)
    for j, (old, new) in enumerate(zip(net.stacked, smaller.stacked, strict=True)):
        if old not in optimizer.state:
            continue
        state = {}
        for name, value in optimizer.state[old].items():
            if name == "step":  # one count for all the networks of a tensor
                state[name] = value.clone()
                continue
            moved = torch.zeros_like(new)
            for i, k in enumerate(networks):
                moved[i][smaller.place(i, j)] = net.own(k, j, value)
            state[name] = moved
        stepper.state[new] = state
    return smaller, stepper


class StackedAdam(torch.optim.Adam):
    """torch's Adam (or AdamW, `decoupled_weight_decay`) over a StackedNetwork's tensors, with one
    learning rate per network: `lrs[k]` for slice k of every tensor.

    Each step calls torch's fused Adam kernel (where the optimizer is fused; the functional Adam
    otherwise) once per learning rate, over the slices of the networks that take it (the whole
    tensors when all take one): each network is stepped as torch's Adam steps it alone (nn/adam.py),
    without the Python of Adam.step.

    Its state and param_groups are Adam's own (param_groups' lr is the first network's), so that a
    slice of its state_dict is what a network's own run would save (nn/adam.py reads and writes it)."""

    def __init__(self, params: Any, lrs: list[float], **adam: Any) -> None:
        super().__init__(params, lr=lrs[0], **adam)
        if self.defaults["amsgrad"]:
            raise ValueError("StackedAdam keeps no amsgrad maxima: stack without amsgrad")
        # The networks that take each learning rate.
        self.networks = {lr: [k for k, own in enumerate(lrs) if own == lr] for lr in dict.fromkeys(lrs)}

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure: Adam's steps take none here
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [grad for p in params if (grad := p.grad) is not None]
            exp_avgs, exp_avg_sqs, steps = moments(self, group, params)
            tensors = (params, grads, exp_avgs, exp_avg_sqs)
            if len(self.networks) == 1:
                (lr,) = self.networks
                adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, **settings(group))
            elif group["fused"] and not group["capturable"]:
                # The kernel reads each tensor's count: counted here, once for all its networks.
                for step in steps:
                    step.add_(1)
                for lr, networks in self.networks.items():
                    counts = [step for step in steps for _ in networks]
                    fused_kernel(*_slices(tensors, networks), counts, lr, group)
            else:
                for lr, networks in self.networks.items():
                    # Adam counts each tensor's steps as it steps it: copies here, counted once below.
                    counts = [step.clone() for step in steps for _ in networks]
                    adam(*_slices(tensors, networks), [], counts, lr=lr, **settings(group))
                for step in steps:
                    step.add_(1)


Tensors = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


def _slices(tensors: Tensors, networks: list[int]) -> Tensors:
    """The networks' slices of stacked tensors: of the parameters, gradients and moments, each
    tensor's networks in turn."""
    params, grads, exp_avgs, exp_avg_sqs = ([tensor[k] for tensor in listed for k in networks] for listed in tensors)
    return params, grads, exp_avgs, exp_avg_sqs
