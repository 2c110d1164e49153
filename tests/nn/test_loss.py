import torch

from mnist_lit.nn.loss import CategoricalCrossentropy


def test_categorical_on_one_hot_equals_sparse_on_integers():
    torch.manual_seed(0)
    logits = torch.randn(32, 10, requires_grad=True)
    labels = torch.randint(0, 10, (32,))
    categorical = CategoricalCrossentropy()(logits, labels)
    sparse = torch.nn.CrossEntropyLoss()(logits, labels)
    assert torch.equal(categorical, sparse)
    (g1,) = torch.autograd.grad(categorical, logits)
    (g2,) = torch.autograd.grad(sparse, logits)
    assert torch.equal(g1, g2)


def test_loss_equals_softmax_then_cross_entropy():
    """What Keras computes: Dense(10, softmax), then -log p(label)."""
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    keras = -torch.log(torch.softmax(logits, -1)[torch.arange(8), labels]).mean()
    assert torch.allclose(CategoricalCrossentropy()(logits, labels), keras)
