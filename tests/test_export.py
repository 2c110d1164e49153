"""mnist-lit-export: the trained network as model.pt2 or model.onnx, pixels in, probabilities out,
giving what `load(run).predict` gives."""

import sys

import numpy as np
import pytest
import torch

from mnist_lit import load
from tests.conftest import cli

# 1,000 images as MNIST stores them: uint8 (n, 28, 28).
IMAGES = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def exported(run, format: str, where):
    done = cli(
        [f"checkpoint={run}", f"format={format}", "hydra.run.dir=out"],
        where,
        where,
        command=(sys.executable, "-m", "mnist_lit.export"),
    )
    assert done.returncode == 0, done.stderr
    return where / "out" / f"model.{format}"


@pytest.mark.slow
def test_the_pt2_file_gives_the_checkpoints_probabilities(tiny_run, tmp_path):
    program = torch.export.load(exported(tiny_run, "pt2", tmp_path)).module()
    expected = load(tiny_run).predict(IMAGES)
    torch.testing.assert_close(program(IMAGES), expected, atol=1e-5, rtol=0)
    assert program(IMAGES[:3]).shape == (3, 10)  # any batch


@pytest.mark.slow
def test_the_onnx_file_run_by_onnx_runtime_gives_the_checkpoints_probabilities(tiny_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    session = ort.InferenceSession(str(exported(tiny_run, "onnx", tmp_path)))
    [probabilities] = session.run(None, {"images": IMAGES.numpy()})
    expected = load(tiny_run).predict(IMAGES).numpy()
    assert np.abs(probabilities - expected).max() <= 1e-5
    assert session.run(None, {"images": IMAGES[:3].numpy()})[0].shape == (3, 10)


def test_an_unknown_format_is_one_line(tmp_path):
    done = cli(
        ["checkpoint=x", "format=tflite"], tmp_path, tmp_path, command=(sys.executable, "-m", "mnist_lit.export")
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "format=tflite is unknown; choose onnx or pt2"
