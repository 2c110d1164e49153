import pytest
import torch
from torch import nn

from mnist_lit.common.choices import ACTIVATIONS
from mnist_lit.nn.exported import FromPixels
from mnist_lit.nn.network import DenseNetwork
from mnist_lit.nn.summary import count, summary


@pytest.mark.parametrize(
    ("hidden", "parameters"),
    [([], 7_850), ([100], 79_510), ([256, 128], 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10)],
)
def test_parameter_counts_match_keras(hidden, parameters):
    assert count(DenseNetwork(hidden)) == parameters


def test_summary_is_keras_table_of_layers_output_shapes_and_parameters():
    net = DenseNetwork([100])
    net.output.requires_grad_(False)  # a frozen layer's parameters count as non-trainable
    assert summary(net).splitlines() == [
        "Layer (type)        Output Shape    Param #",
        "=" * 47,
        "dense_1 (Linear)    (None, 100)     78,500",
        "relu_1 (ReLU)       (None, 100)     0",
        "output (Linear)     (None, 10)      1,010",
        "=" * 47,
        "Total params: 79,510",
        "Trainable params: 78,500",
        "Non-trainable params: 1,010",
    ]


def test_keras_init_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    net = DenseNetwork([100], init="keras")
    bound = (6 / (784 + 100)) ** 0.5
    assert net.dense_1.weight.abs().max() <= bound
    assert net.dense_1.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(net.dense_1.bias) == 0 and torch.count_nonzero(net.output.bias) == 0


def test_torch_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    assert torch.count_nonzero(DenseNetwork([100], init="torch").dense_1.bias) > 0


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid", "elu", "gelu", "silu", "leakyrelu", "softplus"])
def test_activations_by_name(name):
    net = DenseNetwork([8, 8], activation=name)
    kind = getattr(nn, ACTIVATIONS[name])
    assert isinstance(net[1], kind) and isinstance(net[3], kind)
    assert net(torch.zeros(5, 784)).shape == (5, 10)


def test_softmax_is_no_hidden_activation():
    assert "softmax" not in ACTIVATIONS and "glu" not in ACTIVATIONS


def test_the_activation_table_is_torchs_elementwise_activations():
    """The table lets a bad name be refused without importing torch; it must not drift from torch.nn."""
    not_elementwise = {"Threshold", "GLU", "MultiheadAttention", "Softmin", "Softmax", "Softmax2d", "LogSoftmax"}
    torchs = {name.lower(): name for name in nn.modules.activation.__all__ if name not in not_elementwise}
    assert ACTIVATIONS == torchs


def test_the_exported_network_takes_mnists_uint8_images_and_gives_each_ones_class_probabilities():
    """What other programs run (mnist-lit-export): the tutorial's own arithmetic, x / 255 as a
    784-vector, in front of the network, and a softmax over the ten classes of each image behind."""
    torch.manual_seed(0)
    net = DenseNetwork([16])
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    probabilities = FromPixels(net)(images)
    by_hand = torch.exp(net(images.reshape(5, 784) / 255.0))
    torch.testing.assert_close(probabilities, by_hand / by_hand.sum(1, keepdim=True))
