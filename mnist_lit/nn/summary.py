"""Keras's model.summary(): each layer with its output shape and parameter count."""

import torch
from torch import nn

from mnist_lit.nn.network import INPUTS


def summary(net: nn.Module) -> str:
    rows = [("Layer (type)", "Output Shape", "Param #")]
    x = torch.zeros(1, INPUTS)
    with torch.no_grad():
        for layer_name, layer in net.named_children():
            x = layer(x)
            rows.append((f"{layer_name} ({type(layer).__name__})", f"(None, {x.shape[-1]})", f"{count(layer):,}"))
    widths = [max(len(row[i]) for row in rows) + 4 for i in range(3)]
    rule = "=" * sum(widths)
    header, *layers = [
        "".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    total, trainable = count(net), count(net, trainable_only=True)
    return "\n".join(
        [
            header,
            rule,
            *layers,
            rule,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
        ]
    )


def count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
