"""A quiet console: the Keras lines and the summary, no notices a user cannot act on, each of
Lightning's messages once, and no progress bar where it cannot redraw itself."""

import re

import pytest

from tests.conftest import cli

NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "deprecated",
    "logging interval",
    "Epoch 0",
    "Creating it",
    "database tables",
    "WARNING",
)


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["none", "tensorboard", "mlflow"])
def test_a_run_prints_the_summary_epoch_lines_and_results_once_each(tiny_mnist, tmp_path, logger):
    if logger != "none":
        pytest.importorskip(logger)
    done = cli(["trainer.max_epochs=2", "data.steps_per_execution=4", f"logger={logger}"], tmp_path, tiny_mnist)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert not [word for word in NOISE if word in console], console
    assert "\r" not in console  # output that is no terminal gets no progress bar
    assert re.findall(r"^Epoch (\d)/2 - ", done.stdout, re.M) == ["1", "2"]
    assert console.count("Total params: 7,850") == 1
    assert console.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 1
    assert console.count("test_accuracy: ") == 1


@pytest.mark.slow
def test_two_fits_in_one_notebook_print_the_keras_lines_alone(tiny_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "from mnist_lit import fit",
        'history = fit("model=mlp", "trainer.max_epochs=2", "data.steps_per_execution=4", output_dir="first")',
        'history = fit("trainer.max_epochs=2", "data.steps_per_execution=4", output_dir="second")',
        "print(sorted(history))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tiny_env)}}).execute()
    outputs = [
        "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
        for cell in notebook.cells
    ]
    for printed in outputs[1:3]:
        lines = printed.splitlines()
        assert [line[:10] for line in lines] == ["Epoch 1/2 ", "Epoch 2/2 "], printed
    assert outputs[3].strip() == "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    # The same files as the command line leaves: its config, its overrides and its log.
    for run in ("first", "second"):
        assert (tiny_env / run / ".hydra" / "config.yaml").exists()
        assert "- trainer.max_epochs=2" in (tiny_env / run / ".hydra" / "overrides.yaml").read_text()
        log = (tiny_env / run / "mnist_lit.log").read_text()
        assert "Total params" in log and "test_accuracy" in log
