import torch

from mnist_lit.nn.loss import CategoricalCrossentropy


def test_categorical_of_class_labels_is_that_of_their_one_hot_encoding_and_of_sparse():
    torch.manual_seed(0)
    logits = torch.randn(32, 10, requires_grad=True)
    labels = torch.randint(0, 10, (32,))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    losses = [
        CategoricalCrossentropy()(logits, labels),
        CategoricalCrossentropy()(logits, one_hot),  # the tutorial's to_categorical labels
        torch.nn.CrossEntropyLoss()(logits, labels),  # sparse_categorical_crossentropy
    ]
    gradients = [torch.autograd.grad(loss, logits)[0] for loss in losses]
    assert all(torch.equal(loss, losses[0]) for loss in losses)
    assert all(torch.equal(gradient, gradients[0]) for gradient in gradients)


def test_loss_equals_softmax_then_cross_entropy():
    """What Keras computes: Dense(10, softmax), then -log p(label)."""
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    keras = -torch.log(torch.softmax(logits, -1)[torch.arange(8), labels]).mean()
    assert torch.allclose(CategoricalCrossentropy()(logits, labels), keras)
