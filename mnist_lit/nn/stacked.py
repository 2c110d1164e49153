"""K networks of one shape as one, for the engine's Batched form (the stacked launcher)."""

import torch
from torch import nn


class StackedNetwork(nn.Module):
    """K DenseNetworks of one shape as one: each Dense layer's K weight matrices one (K, out, in)
    tensor, its K biases one (K, out), in the order each network lists its own parameters."""

    def __init__(self, nets: list[nn.Sequential]) -> None:
        super().__init__()
        layers = dict(nets[0].named_children())
        self.dense = [name for name, layer in layers.items() if isinstance(layer, nn.Linear)]
        # Modules, so that train() and eval() reach them as they reach each network's own.
        self.activations = nn.ModuleList(layer for layer in layers.values() if not isinstance(layer, nn.Linear))
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([getattr(getattr(net, name), kind).detach() for net in nets]).clone())
            for name in self.dense
            for kind in ("weight", "bias")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, n, 784) → (K, n, 10) logits, by batched matmuls."""
        for i in range(len(self.dense)):
            weight, bias = self.stacked[2 * i], self.stacked[2 * i + 1]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            if i < len(self.activations):
                x = self.activations[i](x)
        return x

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Network k's state_dict, as its own network names it."""
        return {
            f"{name}.{kind}": self.stacked[2 * i + j][k].detach().clone()
            for i, name in enumerate(self.dense)
            for j, kind in enumerate(("weight", "bias"))
        }
