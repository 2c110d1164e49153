import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException

from mnist_lit.common.errors import ConfigError
from mnist_lit.config.checks import validate
from mnist_lit.config.directories import unique_dir


def config(*overrides):
    with initialize_config_module("mnist_lit.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_are_the_tutorial():
    cfg = config()
    assert list(cfg.model.hidden) == [] and cfg.loss._target_.endswith("CategoricalCrossentropy")
    assert cfg.optimizer.lr == 1e-3 and list(cfg.optimizer.betas) == [0.9, 0.999] and cfg.optimizer.eps == 1e-7
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 10 and cfg.data.val_size == 0
    mlp = config("model=mlp", "loss=sparse")
    assert list(mlp.model.hidden) == [100] and mlp.model.activation == "relu"
    assert mlp.loss._target_ == "torch.nn.CrossEntropyLoss"


def test_data_root_follows_mnist_lit_data_then_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LIT_DATA", "/data/mnist")
    assert config().data.root == "/data/mnist"
    monkeypatch.delenv("MNIST_LIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert config().data.root == f"{tmp_path}/mnist_lit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/user")
    assert config().data.root == "/home/user/.cache/mnist_lit"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden=[0]", "model.hidden=[0]: every width must be ≥ 1"),
        ("model.hidden=[-5]", "model.hidden=[-5]: every width must be ≥ 1"),
        ("model.activation=relux", "model.activation=relux is unknown; choose one of: celu, elu, gelu"),
        ("model.init=he", "model.init=he is unknown; choose one of: keras, torch"),
        ("optimizer.lr=0", "optimizer.lr=0.0 is out of range: it must be > 0"),
        ("data.batch_size=0", "data.batch_size=0 is out of range: it must be ≥ 1"),
        ("data.val_size=-1", "data.val_size=-1 is out of range: it must be ≥ 0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: it must be ≥ 1"),
        ("trainer.precision=16-mixed", "trainer.precision=16-mixed is not supported; choose one of:"),
    ],
)
def test_bad_values_fail_validation_in_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        validate(config(override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "exception"),
    [
        ("model=cnn", MissingConfigException),
        ("loss=hinge", MissingConfigException),
        ("model.hiden=[10]", ConfigCompositionException),
        ("trainer.max_epochs=ten", ConfigCompositionException),
    ],
)
def test_unknown_options_keys_and_types_fail_while_composing(override, exception):
    with pytest.raises(exception):
        config(override)


def test_unique_dir_never_reuses_a_directory(tmp_path):
    first = unique_dir(str(tmp_path / "runs" / "12-00-00"))
    second = unique_dir(str(tmp_path / "runs" / "12-00-00"))
    assert first != second and second.endswith("12-00-00-1")
    (tmp_path / "runs" / "12-00-00" / "keep.txt").write_text("mine")
    unique_dir(str(tmp_path / "runs" / "12-00-00"))
    assert (tmp_path / "runs" / "12-00-00" / "keep.txt").read_text() == "mine"
