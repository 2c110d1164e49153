"""Fashion-MNIST and KMNIST: the same IDX files, the same preparation and checks, their own class names."""

import csv
import gzip
import json

import pytest

from mnist_lit import fit, load
from mnist_lit.common.errors import ConfigError, DataError
from mnist_lit.lit.data import names
from tests.conftest import make_mnist

QUIET = ("trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")
CLASSES = {
    "fashion_mnist": (
        "FashionMNIST",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    ),
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
}


@pytest.mark.parametrize("choice", sorted(CLASSES))
def test_each_data_set_trains_from_its_own_folder_and_shows_its_class_names(tmp_path, monkeypatch, choice):
    dataset, classes = CLASSES[choice]
    make_mnist(tmp_path / "data", dataset=dataset)
    monkeypatch.chdir(tmp_path)
    history = fit(f"data={choice}", f"data.root={tmp_path / 'data'}", *QUIET, output_dir="run")
    assert 0.5 < history["val_accuracy"][-1] < 0.9  # the tiny images are learnable, not to perfection
    assert names(dataset) == classes
    with open(tmp_path / "run" / "confusion_matrix.csv") as f:
        assert next(csv.reader(f))[1:] == classes
    assert list(json.loads((tmp_path / "run" / "results.json").read_text())["per_class_accuracy"]) == classes
    assert load(tmp_path / "run").names == classes


def test_mnist_stays_the_default_with_digits_as_names(tiny_env):
    fit(*QUIET, output_dir="run")
    with open(tiny_env / "run" / "confusion_matrix.csv") as f:
        assert next(csv.reader(f))[1:] == [str(digit) for digit in range(10)]


def test_a_damaged_file_is_checked_and_named_in_every_data_set(tmp_path):
    make_mnist(tmp_path / "data", dataset="KMNIST")
    image_file = tmp_path / "data" / "KMNIST" / "raw" / "train-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"{image_file} is truncated"):
        fit("data=kmnist", f"data.root={tmp_path / 'data'}", *QUIET, output_dir=tmp_path / "run")


def test_resuming_on_another_data_set_is_refused(tmp_path, monkeypatch):
    make_mnist(tmp_path / "data")
    make_mnist(tmp_path / "data", dataset="FashionMNIST")
    root = f"data.root={tmp_path / 'data'}"
    fit(root, *QUIET, output_dir=tmp_path / "mnist")
    with pytest.raises(
        ConfigError, match=r"was trained with data.dataset=MNIST, this run has data.dataset=FashionMNIST"
    ):
        fit(
            "data=fashion_mnist",
            root,
            *QUIET,
            f"resume={tmp_path / 'mnist'}",
            "trainer.max_epochs=2",
            output_dir=tmp_path / "run",
        )


def test_archives_placed_by_hand_are_unpacked_even_when_recompressed(tmp_path):
    """Debian's Fashion-MNIST .gz files hold the right images under checksums torchvision does not know."""
    make_mnist(tmp_path / "made", dataset="FashionMNIST")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for file in (tmp_path / "made" / "FashionMNIST" / "raw").iterdir():
        with gzip.open(raw / f"{file.name}.gz", "wb") as archive:
            archive.write(file.read_bytes())
    history = fit("data=fashion_mnist", f"data.root={tmp_path / 'data'}", *QUIET, output_dir=tmp_path / "run")
    assert 0.5 < history["val_accuracy"][-1] < 0.9
