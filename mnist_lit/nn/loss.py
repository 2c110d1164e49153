"""The two Keras losses of the tutorial, on logits.

`F.cross_entropy` takes softmax and cross-entropy in one numerically stable step; it
accepts integer labels (sparse_categorical_crossentropy, exercise 3) as well as class
probabilities such as one-hot vectors (categorical_crossentropy, the tutorial's default).
The sparse loss is therefore torch.nn.CrossEntropyLoss itself (conf/loss/sparse.yaml).
"""

import torch
from torch import nn
from torch.nn import functional as F


class CategoricalCrossentropy(nn.Module):
    """Keras's categorical_crossentropy: the cross-entropy of labels one-hot encoded, as
    `to_categorical` encodes them, or given so (floats: any class probabilities).

    Of class labels it is computed as what it equals: a one-hot vector's terms off the label are
    zeros, so -Σ onehot · log softmax is -log softmax at the label, the same number with the same
    gradient (tests/nn/test_loss.py), at a gather where the encoding took a multiply and a sum over
    the classes, most of a logistic regression's step on a CPU."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            return F.cross_entropy(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)


def image_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's cross-entropy, for logits (..., n, classes) and labels (..., n). Both of the
    tutorial's losses: the cross-entropy of one-hot targets is that of integer labels.

    The classes go where cross_entropy takes them, second, rather than flattened to rows: a stack's
    logits (K, n, classes) are a view of (K, classes, n) (nn/stacked.py), which this reads in place
    and flattening would copy."""
    return F.cross_entropy(logits.movedim(-1, 1), labels, reduction="none")
