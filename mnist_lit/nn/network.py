"""The tutorial's networks: Input(784) → Dense(width, activation) × len(hidden) → Dense(10).

`hidden=[]` is network 1, logistic regression; `hidden=[100]` with relu is network 2.
The last Dense layer returns logits: softmax is folded into the loss (see loss.py) and
applied in `predict_step`, which together equal Keras's Dense(10, softmax) + cross-entropy.
"""

from collections import OrderedDict

from torch import nn

from mnist_lit.common.choices import ACTIVATIONS

INPUTS = 28 * 28
CLASSES = 10


class DenseNetwork(nn.Sequential):
    def __init__(self, hidden: list[int], activation: str = "relu", init: str = "keras") -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = INPUTS
        for i, units in enumerate(hidden, start=1):
            layers[f"dense_{i}"] = nn.Linear(width, units)
            layers[f"{activation}_{i}"] = getattr(nn, ACTIVATIONS[activation])()
            width = units
        layers["output"] = nn.Linear(width, CLASSES)
        super().__init__(layers)
        if init == "keras":
            self.apply(_glorot_uniform)


def _glorot_uniform(module: nn.Module) -> None:
    """Keras's Dense default: Glorot-uniform kernel, zero bias (PyTorch uses Kaiming-uniform for both)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
