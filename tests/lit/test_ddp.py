"""DDP on two CPU processes (gloo): gradients all-reduced on every mini-batch, epoch metrics over
the images of all ranks, rank 0 alone writing, resumable, and inside a sweep."""

import json

import lightning as L
import pytest
import torch

from mnist_lit import fit
from mnist_lit.lit.data import MNISTDataModule
from mnist_lit.runs.build import restore
from tests.conftest import cli, final_test_loss, last_weights, make_mnist
from tests.sweeps.test_sweep import finish, multirun, read_csv, sweep_dirs

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

DDP = [
    "model=mlp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "data.steps_per_execution=4",
    "trainer.enable_progress_bar=false",
]
RUN_FILES = {
    ".hydra",
    ".lock",
    "checkpoints",
    "history.png",
    "metrics.csv",
    "mnist_lit.log",
    "results.json",
    "summary.txt",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "mistakes.png",
}
JOB_FILES = RUN_FILES - {".lock"}  # a sweep locks its own directory, not each job's


def assert_same_metrics(run, other, rel):
    """Two runs' metrics.csv equal, epoch by epoch, up to `rel`."""
    rows, others = read_csv(run / "metrics.csv"), read_csv(other / "metrics.csv")
    assert len(rows) == len(others)
    for row, theirs in zip(rows, others, strict=True):
        assert {k: float(v) for k, v in row.items()} == pytest.approx({k: float(v) for k, v in theirs.items()}, rel=rel)


class RankWeights(L.Callback):
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_end(self, trainer, module):
        torch.save(module.net.state_dict(), f"{self.directory}/rank{trainer.global_rank}.pt")


@pytest.fixture(scope="module")
def spawned(tiny_mnist, tmp_path_factory):
    """A 3-epoch MLP trained by ddp_spawn in this process, with each rank's last weights beside it."""
    directory = tmp_path_factory.mktemp("spawned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_LIT_DATA", str(tiny_mnist))
        history = fit(
            *DDP,
            "trainer.strategy=ddp_spawn",
            "trainer.max_epochs=3",
            output_dir=directory / "run",
            callbacks=[RankWeights(str(directory))],
        )
    return history, directory


def test_both_ranks_end_with_the_same_weights_and_metrics_count_every_image(spawned, tiny_mnist):
    history, directory = spawned
    # Each rank trained on its own half of the images: only per-mini-batch all-reduces keep them equal.
    rank0, rank1 = (torch.load(directory / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert (
        len(history["loss"]) == 3 and 0.6 < history["val_accuracy"][-1] < 0.9
    )  # the spawning process has rank 0's history
    # val_loss is the mean over all 160 test images, not over one rank's 80.
    expected = final_test_loss(directory / "run", tiny_mnist)
    assert history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_ddp_and_ddp_spawn_train_alike_resume_and_load_into_one_device(spawned, tiny_mnist, tmp_path):
    def run(*args):
        done = cli([*DDP, *args], tmp_path, tiny_mnist)
        assert done.returncode == 0, done.stderr
        return done

    run("trainer.strategy=ddp", "trainer.max_epochs=3", "hydra.run.dir=straight")
    run("trainer.strategy=ddp", "trainer.max_epochs=1", "hydra.run.dir=first")
    run("trainer.strategy=ddp", "trainer.max_epochs=3", "resume=first", "hydra.run.dir=resumed")
    straight = (tmp_path / "straight" / "metrics.csv").read_text()
    assert straight.count("\n") == 4
    assert (tmp_path / "resumed" / "metrics.csv").read_text() == straight
    # The two launchers sum the ranks' epoch means in another order.
    spawned_run = spawned[1] / "run"
    assert_same_metrics(tmp_path / "straight", spawned_run, rel=1e-6)
    for other in (spawned_run, tmp_path / "resumed"):
        a, b = last_weights(tmp_path / "straight"), last_weights(other)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Rank 1 writes its log and nothing else.
    assert {p.name for p in (tmp_path / "straight").iterdir()} == RUN_FILES | {"train_ddp_process_1.log"}
    assert not (tmp_path / "outputs").exists()  # and no run directory of its own
    # A 2-process checkpoint goes on in a 1-process run.
    one = cli(
        ["model=mlp", "trainer.max_epochs=4", "resume=straight", "hydra.run.dir=one", *DDP[3:]], tmp_path, tiny_mnist
    )
    assert one.returncode == 0, one.stderr
    assert "Resuming on 1 process (it was 2): the real batch goes from 64 to 32" in one.stdout
    assert (tmp_path / "one" / "metrics.csv").read_text().startswith(straight)


def test_ddp_inside_a_sweep(tiny_mnist, tmp_path):
    code, _, stderr = finish(
        multirun(
            [*DDP, "trainer.strategy=ddp", "model.activation=relu,tanh", "trainer.max_epochs=2"], tmp_path, tiny_mnist
        )
    )
    assert code == 0, stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok", "ok"]
    for job in ("0", "1"):
        assert {p.name for p in (sweep / job).iterdir()} == JOB_FILES | {"train_ddp_process_1.log"}
    assert {p.name for p in (tmp_path / "outputs").iterdir()} == {"multirun"}


class MetricStates(L.Callback):
    """Records, on each rank, whether any metric state lies in memory shared with other processes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_start(self, trainer, module):
        groups = (module.train_metrics, module.val_metrics, module.test_metrics)
        metrics = [metric for group in groups for metric in group.named().values()]
        shared = any(getattr(m, state).is_shared() for m in metrics for state in m._defaults)
        with open(f"{self.directory}/shared{trainer.global_rank}.txt", "w") as f:
            f.write(str(shared))


def test_spawned_ranks_count_into_their_own_metrics_each_image_once_and_limits_per_rank(tmp_path, monkeypatch):
    """161 test images on 2 ranks: 81 and 80, none counted twice; limit_test_batches=1 is one
    mini-batch on each rank, 64 images, and the confusion matrix covers those 64 too."""
    data = make_mnist(tmp_path / "data", test=161)
    monkeypatch.setenv("MNIST_LIT_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    history = fit(
        *DDP,
        "trainer.strategy=ddp_spawn",
        "trainer.max_epochs=1",
        "trainer.limit_test_batches=1",
        output_dir="run",
        callbacks=[MetricStates(str(tmp_path))],
    )
    assert [(tmp_path / f"shared{rank}.txt").read_text() for rank in (0, 1)] == ["False", "False"]
    module = restore(tmp_path / "run")
    datamodule = MNISTDataModule(str(data))
    datamodule.setup("test")
    images, labels = datamodule.test.tensors
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(module.net(images), labels, reduction="none")
    assert len(labels) == 161
    assert history["val_loss"][-1] == pytest.approx(losses.mean().item(), rel=1e-6)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_loss"] == pytest.approx(losses[:64].mean().item(), rel=1e-6)
    rows = read_csv(tmp_path / "run" / "confusion_matrix.csv")
    assert sum(int(v) for row in rows for k, v in row.items() if k != "true \\ predicted") == 64
