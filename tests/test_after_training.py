"""After training: every run's confusion matrix, mistakes and pictures, evaluate, predict and load."""

import csv
import json
import os
import sys

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import mnist_lit
from mnist_lit import Classifier
from mnist_lit.common.files import WriteError
from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.reports import mistakes
from mnist_lit.reports.history import plot
from mnist_lit.reports.pictures import Picture, write_all
from tests.conftest import cli, in_process
from tests.lit.test_console import NOISE

PREDICT = (sys.executable, "-m", "mnist_lit.predict")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_its_confusion_matrix_mistakes_and_per_class_accuracy(tiny_run):
    rows = read_csv(tiny_run / "confusion_matrix.csv")
    assert list(rows[0]) == ["true \\ predicted", *"0123456789"] and [r["true \\ predicted"] for r in rows] == list(
        "0123456789"
    )
    assert sum(int(v) for r in rows for k, v in r.items() if k != "true \\ predicted") == 160  # every test image once
    for name in ("confusion_matrix.png", "mistakes.png"):
        assert (tiny_run / name).read_bytes().startswith(b"\x89PNG")
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results["per_class_accuracy"]) == set("0123456789")
    # 16 test images a class: the test accuracy is the mean of the classes' accuracies.
    assert np.mean(list(results["per_class_accuracy"].values())) == pytest.approx(results["test_accuracy"])


def test_pictures_drawn_together_are_those_drawn_alone(tmp_path):
    """A stack draws its jobs' pictures in forked processes, each process its pictures of one kind
    into one figure: the very files each drawn alone, in a figure of its own, here; and a picture
    that cannot be written stops the caller with its one line."""
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(500, 10, generator=generator).softmax(-1)
    images, labels = torch.rand(500, 784, generator=generator), torch.randint(10, (500,), generator=generator)
    names = list("0123456789")
    histories = (
        {"loss": [0.5, 0.25], "accuracy": [0.9, 0.95], "val_loss": [0.3, 0.2], "val_accuracy": [0.92, 0.96]},
        {"loss": [0.4], "accuracy": [0.8], "val_loss": [0.35], "val_accuracy": [0.85]},
    )
    # Of each kind two pictures, the second unlike the first: other epochs, counts in the
    # thousands, 36 mistakes then 11 (the other 25 titles must go).
    drawn = {
        **{f"history{i}.png": (plot, (history,)) for i, history in enumerate(histories)},
        **{
            f"confusion{i}.png": (mistakes.confusion_plot, (torch.randint(top, (10, 10)).tolist(), names))
            for i, top in enumerate((50, 5000))
        },
        **{
            f"mistakes{i}.png": (mistakes.mistakes_plot, mistakes.worst(images[:n], labels[:n], probs[:n], names))
            for i, n in enumerate((500, 12))
        },
    }
    assert len(drawn["mistakes1.png"][1][1]) == 11
    for where in ("alone", "forked", "one figure each kind"):
        (tmp_path / where).mkdir()
    for name, (draw, values) in drawn.items():
        Picture(tmp_path / "alone" / name, draw, values).write()
    for where, processes in (("forked", 2), ("one figure each kind", 1)):
        write_all([Picture(tmp_path / where / name, draw, values) for name, (draw, values) in drawn.items()], processes)
        for name in drawn:
            assert (tmp_path / where / name).read_bytes() == (tmp_path / "alone" / name).read_bytes(), (where, name)
    history = histories[0]
    nowhere = [Picture(tmp_path / "forked" / name, plot, (history,)) for name in ("ok.png", "no/such/dir.png")]
    with pytest.raises(WriteError, match=r"cannot write .*dir\.png: No such file or directory"):
        write_all(nowhere, 2)


def test_load_predicts_from_every_kind_of_input(tiny_run, tiny_mnist, tmp_path):
    model = mnist_lit.load(tiny_run)
    datamodule = MNISTDataModule(str(tiny_mnist))
    datamodule.setup("test")
    images, labels = datamodule.test.tensors
    square = images.reshape(-1, 28, 28)
    expected = model.predict(images)
    assert expected.shape == (160, 10) and torch.allclose(expected.sum(-1), torch.ones(160))
    results = json.loads((tiny_run / "results.json").read_text())
    assert (expected.argmax(-1) == labels).float().mean().item() == pytest.approx(results["test_accuracy"])
    assert torch.equal(model.predict(square), expected)
    assert torch.allclose(model.predict(square[0]), expected[:1], atol=1e-6)
    assert torch.allclose(model.predict((square * 255).round().to(torch.uint8).numpy()), expected, atol=1e-3)
    drawn = Image.fromarray((255 - square[3] * 255).to(torch.uint8).numpy()).resize((90, 90))  # dark on light
    drawn.save(tmp_path / "three.png")
    from_file, from_pil = model.predict(tmp_path / "three.png"), model.predict([drawn, drawn])
    # Files and PIL images are prepared as MNIST was made (the tiny look-alikes are no digits:
    # test_real_digits_redrawn_as_jpegs_are_recognised checks the answers).
    assert from_file.shape == (1, 10) and torch.allclose(from_pil[0], from_file[0])
    with pytest.raises(ValueError, match=r"images of shape \(2, 5\): give \(28, 28\), \(n, 28, 28\) or \(n, 784\)"):
        model.predict(torch.zeros(2, 5))


def test_lightning_loads_the_classifier_from_its_checkpoint(tiny_run):
    module = Classifier.load_from_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    weights = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in weights.items())
    # A LightningModule like any other: Lightning's predict loop gives load()'s probabilities.
    images = torch.rand(6, 784)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.zeros(6, dtype=torch.long)), batch_size=4
    )
    predicted = torch.cat(L.Trainer(logger=False, enable_progress_bar=False).predict(module, loader))
    assert torch.allclose(predicted, mnist_lit.load(tiny_run).predict(images), atol=1e-6) and predicted.shape == (6, 10)
    # And it trains on from anyone's (x, y) batches: images of any shape, one optimizer step a batch.
    square = torch.rand(64, 1, 28, 28)
    labels = module(square.flatten(1)).argmax(-1).roll(1)  # what it does not answer yet
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(square, labels), batch_size=16)
    trainer = L.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, batches)
    assert trainer.global_step == 80
    assert (module(square.flatten(1)).argmax(-1) == labels).float().mean() > 0.9


@pytest.mark.slow
def test_evaluate_gives_the_runs_test_accuracy_in_a_directory_of_its_own(tiny_run, tiny_env, monkeypatch, capsys):
    before = {p: p.stat().st_mtime for p in tiny_run.rglob("*")}
    assert in_process("evaluate", ["checkpoint=" + str(tiny_run)], monkeypatch) is None
    printed = capsys.readouterr()
    said = [word for word in (*NOISE, "was configured so") if word in printed.out + printed.err]
    assert not said, printed  # as quiet as a run
    (evaluated,) = (tiny_env / "outputs" / "evaluate").glob("*/*")
    results, run = (
        json.loads((evaluated / "results.json").read_text()),
        json.loads((tiny_run / "results.json").read_text()),
    )
    assert results["test_accuracy"] == run["test_accuracy"] and results["test_loss"] == pytest.approx(run["test_loss"])
    assert results["per_class_accuracy"] == run["per_class_accuracy"]
    assert {"confusion_matrix.csv", "confusion_matrix.png", "mistakes.png"} <= {p.name for p in evaluated.iterdir()}
    assert {p: p.stat().st_mtime for p in tiny_run.rglob("*")} == before  # the run's files are untouched
    assert in_process("evaluate", ["checkpoint=" + str(tiny_run), "split=val"], monkeypatch) is None
    assert "val: 160 images - loss: " in capsys.readouterr().out


def digit_folder(folder, square, labels, count=4):
    folder.mkdir()
    for i in range(count):
        Image.fromarray((255 - square[i] * 255).to(torch.uint8).numpy()).resize((100, 100)).save(
            folder / f"{i}_{int(labels[i])}.png"
        )
    return folder


@pytest.mark.slow
def test_predict_classifies_a_folder_and_says_why_an_image_could_not_be(tiny_run, tiny_mnist, tmp_path):
    datamodule = MNISTDataModule(str(tiny_mnist))
    datamodule.setup("test")
    images, labels = datamodule.test.tensors
    folder = digit_folder(tmp_path / "digits", images.reshape(-1, 28, 28), labels)
    (folder / "notes.png").write_text("no image")
    Image.new("RGB", (40, 40), "white").save(folder / "blank.jpg")
    done = cli(["checkpoint=" + str(tiny_run), f"images={folder}"], tmp_path, tiny_mnist, command=PREDICT)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "2 of 6 images could not be classified: see predictions.csv"
    (predicted,) = (tmp_path / "outputs" / "predict").glob("*/*")
    rows = {os.path.basename(r["file"]): r for r in read_csv(predicted / "predictions.csv")}
    assert (
        rows["blank.jpg"]["error"].startswith("no ink") and "cannot identify image file" in rows["notes.png"]["error"]
    )
    for i in range(4):
        row = rows[f"{i}_{int(labels[i])}.png"]
        # The class load() gives the same file, and a probability no lower than the runner-up's.
        expected = mnist_lit.load(tiny_run).predict(folder / f"{i}_{int(labels[i])}.png")[0]
        assert row["class"] == str(int(expected.argmax())) and float(row["probability"]) == pytest.approx(
            float(expected.max()), abs=1e-4
        )
        assert float(row["probability"]) >= float(row["runner_up_probability"])
        assert f"{i}_{int(labels[i])}.png: {row['class']} (" in done.stdout
    assert (predicted / "preview.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint=missing", "images=x.png"], "checkpoint=missing: no such checkpoint; give a run directory"),
        (["checkpoint=notes.txt", "images=x.png"], "checkpoint=notes.txt: notes.txt is not a mnist_lit checkpoint"),
        (["images=x.png"], "missing: give checkpoint=<run directory or .ckpt file>"),
        (["checkpoint=RUN", "images=empty"], "images=empty: the folder empty holds no image files"),
        (["checkpoint=RUN", "images=none/*.png"], "images=none/*.png: the pattern none/*.png holds no image files"),
    ],
)
def test_predict_bad_input_is_one_line(tiny_run, tiny_env, monkeypatch, args, message):
    (tiny_env / "notes.txt").write_text("no checkpoint")
    (tiny_env / "empty").mkdir()
    line = in_process("predict", [a.replace("RUN", str(tiny_run)) for a in args], monkeypatch)
    assert line is not None and "\n" not in line and line.startswith(message), line
