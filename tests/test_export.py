"""mnist-lit-export: the trained network as model.pt2 or model.onnx, pixels in, probabilities out,
giving what `load(run).predict` gives."""

import sys

import numpy as np
import pytest
import torch

from mnist_lit import fit, load
from tests.conftest import cli

# 1,000 images as MNIST stores them: uint8 (n, 28, 28).
IMAGES = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def run(tiny_mnist, tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    # Put back as it was: CI sets MNIST_LIT_DATA for every test.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
        fit("model=mlp", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", output_dir=directory / "run")
    return directory


def exported(run, format: str):
    done = cli(
        [f"checkpoint={run / 'run'}", f"format={format}", f"hydra.run.dir=out-{format}"],
        run,
        run,
        command=(sys.executable, "-m", "mnist_lit.export"),
    )
    assert done.returncode == 0, done.stderr
    return run / f"out-{format}" / f"model.{format}"


@pytest.mark.slow
def test_the_pt2_file_gives_the_checkpoints_probabilities(run):
    program = torch.export.load(exported(run, "pt2")).module()
    expected = load(run / "run").predict(IMAGES)
    torch.testing.assert_close(program(IMAGES), expected, atol=1e-5, rtol=0)
    assert program(IMAGES[:3]).shape == (3, 10)  # any batch


@pytest.mark.slow
def test_the_onnx_file_run_by_onnx_runtime_gives_the_checkpoints_probabilities(run):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    session = ort.InferenceSession(str(exported(run, "onnx")))
    [probabilities] = session.run(None, {"images": IMAGES.numpy()})
    expected = load(run / "run").predict(IMAGES).numpy()
    assert np.abs(probabilities - expected).max() <= 1e-5
    assert session.run(None, {"images": IMAGES[:3].numpy()})[0].shape == (3, 10)


def test_an_unknown_format_is_one_line(tmp_path):
    done = cli(
        ["checkpoint=x", "format=tflite"], tmp_path, tmp_path, command=(sys.executable, "-m", "mnist_lit.export")
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "format=tflite is unknown; choose onnx or pt2"
