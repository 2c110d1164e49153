"""The tutorial's two losses against Keras's own formula, written out: -Σ onehot · log softmax."""

import pytest
import torch

from mnist_lit.nn.loss import CategoricalCrossentropy, image_losses


def keras(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keras's categorical_crossentropy of Dense(10, softmax)'s output, per image: the one-hot
    labels times the log of the softmax, summed over the classes, negated."""
    one_hot = torch.nn.functional.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return -(one_hot * torch.log(torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True))).sum(-1)


@pytest.mark.parametrize(
    "loss",
    [
        lambda logits, labels: CategoricalCrossentropy()(logits, labels),
        # the tutorial's to_categorical labels
        lambda logits, labels: CategoricalCrossentropy()(logits, torch.nn.functional.one_hot(labels, 10).float()),
        # sparse_categorical_crossentropy with integer labels (exercise 3; conf/loss/sparse.yaml)
        lambda logits, labels: torch.nn.CrossEntropyLoss()(logits, labels),
        lambda logits, labels: image_losses(logits, labels).mean(),
    ],
    ids=["categorical of class labels", "categorical of one-hot labels", "sparse", "image losses"],
)
def test_each_loss_is_kerass_cross_entropy_with_its_gradient(loss):
    torch.manual_seed(0)
    logits = (3 * torch.randn(32, 10, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 10, (32,))
    ours, theirs = loss(logits, labels), keras(logits, labels).mean()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(*(torch.autograd.grad(value, logits)[0] for value in (ours, theirs)))


def test_image_losses_of_a_stack_are_each_networks_own():
    """A stack's logits (K, n, classes) as the stacked network lays them out: a view of (K, classes, n)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 10, 16, dtype=torch.float64).transpose(1, 2)
    labels = torch.randint(0, 10, (3, 16))
    expected = torch.stack([keras(logits[k], labels[k]) for k in range(3)])
    torch.testing.assert_close(image_losses(logits, labels), expected)
