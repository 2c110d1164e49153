"""The README's main claims, each checked by a function that a deliberate break makes fail.

Every test runs its claim's check twice: as the code is, where it must pass, and with the thing the
claim is about broken on purpose (a wrong loss in the stack, a resume that loses Adam's state, ...),
where it must fail. A check that passed both ways would have no force."""

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from torch.utils.data import DistributedSampler

from mnist_lit import fit
from mnist_lit.lit import data, module, stack
from mnist_lit.nn import engine
from mnist_lit.nn.loss import CategoricalCrossentropy
from mnist_lit.runs.stacking import Job, train_stack
from tests.conftest import REAL_DATA, last_weights
from tests.sweeps.test_stacked import metrics

# Each check runs two or three times over (as the code is, then broken): the full suite's. The
# quick loop keeps one plain check of each claim (test_faults.py's resume, tests/nn/test_loss.py,
# tests/sweeps/test_stacked.py's stacks of both losses).
pytestmark = pytest.mark.slow

TINY = ("model=mlp", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")


def holds(check: Callable[[], None]) -> bool:
    try:
        check()
    except AssertionError:
        return False
    return True


def bites(check: Callable[[], None], monkeypatch: pytest.MonkeyPatch, *breaks: tuple[object, str, object]) -> None:
    """`check` passes as the code is, and fails with each of `breaks` (target, name, value) applied."""
    assert holds(check), "the claim does not hold as the code is"
    for target, name, value in breaks:
        with monkeypatch.context() as patch:
            patch.setattr(target, name, value)
            assert not holds(check), f"the check did not notice {name} broken"


def same_weights(a: Path, b: Path, **tolerance: float) -> None:
    x, y = last_weights(a), last_weights(b)
    assert x.keys() == y.keys() and all(
        torch.allclose(x[k], y[k], **tolerance) if tolerance else torch.equal(x[k], y[k]) for k in x
    )


def test_a_stacked_job_trains_as_its_run_alone(tiny_env, monkeypatch):
    counter = iter(range(100))

    def check() -> None:
        n = next(counter)
        jobs = []
        for seed in (0, 1):
            with initialize_config_module("mnist_lit.conf", version_base="1.3"):
                cfg = compose("config", overrides=[*TINY, f"seed={seed}"])
            (tiny_env / f"stack{n}" / str(seed)).mkdir(parents=True)
            jobs.append(Job(cfg, tiny_env / f"stack{n}" / str(seed)))
        train_stack(jobs)
        for seed, job in zip((0, 1), jobs, strict=True):
            alone = fit(*TINY, f"seed={seed}", output_dir=f"alone{n}-{seed}")
            for name in ("loss", "val_loss"):
                assert [row[name] for row in metrics(job.directory)] == pytest.approx(alone[name], rel=1e-4), name
            same_weights(job.directory, tiny_env / f"alone{n}-{seed}", atol=1e-5)

    def smoothed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # a loss the runs do not train with
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, -2), labels.flatten(), reduction="none", label_smoothing=0.1
        ).view(labels.shape)

    class FirstJobsOrder(DistributedSampler):  # every network of the stack in the first job's shuffle
        def __init__(self, dataset, **settings):
            super().__init__(dataset, **{**settings, "seed": 0})

    bites(check, monkeypatch, (engine, "image_losses", smoothed), (stack, "DistributedSampler", FirstJobsOrder))


def test_a_resumed_run_ends_as_one_never_stopped(tiny_env, monkeypatch):
    counter = iter(range(100))

    def check() -> None:
        n = next(counter)
        fit(*TINY, "trainer.max_epochs=3", output_dir=f"straight{n}")
        fit(*TINY, "trainer.max_epochs=1", output_dir=f"first{n}")
        fit(*TINY, "trainer.max_epochs=3", f"resume=first{n}", output_dir=f"resumed{n}")
        assert (tiny_env / f"resumed{n}" / "metrics.csv").read_text() == (
            tiny_env / f"straight{n}" / "metrics.csv"
        ).read_text()
        same_weights(tiny_env / f"resumed{n}", tiny_env / f"straight{n}")
        assert (tiny_env / f"first{n}" / "metrics.csv").read_text().count("\n") == 2  # left as it was

    stepped_as = module.restore_step_settings

    def forgets_adam(settings, optimizer):  # the resumed Adam starts without its moments
        stepped_as(settings, optimizer)
        optimizer.state.clear()

    bites(check, monkeypatch, (module, "restore_step_settings", forgets_adam))


def test_a_new_learning_rate_is_applied_on_resume(tiny_env, monkeypatch):
    counter = iter(range(100))

    def check() -> None:
        n = next(counter)
        fit(*TINY, "trainer.max_epochs=1", output_dir=f"first{n}")
        fit(*TINY, "trainer.max_epochs=2", "optimizer.lr=1e-12", f"resume=first{n}", output_dir=f"still{n}")
        # 20 Adam steps of at most about 1e-12 each.
        same_weights(tiny_env / f"still{n}", tiny_env / f"first{n}", atol=1e-9, rtol=0)

    stepped_as = module.restore_step_settings

    def keeps_the_saved_lr(settings, optimizer):
        stepped_as({key: value for key, value in settings.items() if key != "lr"}, optimizer)

    bites(check, monkeypatch, (module, "restore_step_settings", keeps_the_saved_lr))


def test_categorical_and_sparse_cross_entropy_train_the_same_network(tiny_env, monkeypatch):
    counter = iter(range(100))

    def check() -> None:
        n = next(counter)
        categorical = fit(*TINY, "loss=categorical", output_dir=f"categorical{n}")
        sparse = fit(*TINY, "loss=sparse", output_dir=f"sparse{n}")
        for name in categorical:  # two kernels, which may round the last bit differently
            assert categorical[name] == pytest.approx(sparse[name], rel=1e-5), name
        same_weights(tiny_env / f"categorical{n}", tiny_env / f"sparse{n}", atol=1e-6)

    def smoothed(self, logits, labels):  # one-hot targets that are not one-hot
        return torch.nn.functional.cross_entropy(logits, torch.nn.functional.one_hot(labels, 10).float() * 0.9 + 0.01)

    bites(check, monkeypatch, (CategoricalCrossentropy, "forward", smoothed))


class Orders(L.Callback):
    """Each rank's training images, epoch by epoch, and its final weights, in `directory`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_epoch_end(self, trainer, module):
        order = torch.tensor(list(trainer.train_dataloader.sampler))
        torch.save(order, f"{self.directory}/rank{trainer.global_rank}-epoch{trainer.current_epoch}.pt")

    def on_train_end(self, trainer, module):
        torch.save(module.net.state_dict(), f"{self.directory}/rank{trainer.global_rank}.pt")


@pytest.mark.ddp
def test_ddp_ranks_end_equal_each_having_trained_on_its_own_shard(tiny_env, monkeypatch):
    """ddp_fork: the ranks are forks of this process, so a break made here reaches them."""
    counter = iter(range(100))

    def check() -> None:
        n = next(counter)
        directory = tiny_env / f"orders{n}"
        directory.mkdir()
        fit(
            *TINY,
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "trainer.strategy=ddp_fork",
            output_dir=f"run{n}",
            callbacks=[Orders(str(directory))],
        )
        for epoch in (0, 1):
            a, b = (torch.load(directory / f"rank{r}-epoch{epoch}.pt", weights_only=True) for r in (0, 1))
            assert len(a) == len(b) == 320 and sorted(torch.cat([a, b]).tolist()) == list(range(640))
        a, b = (torch.load(directory / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        assert all(torch.equal(a[k], b[k]) for k in a)

    class RankZeroForAll(DistributedSampler):
        def __init__(self, dataset, **settings):
            super().__init__(dataset, **{**settings, "rank": 0})

    bites(check, monkeypatch, (data, "DistributedSampler", RankZeroForAll))


def redrawn_digits_recognised(run: Path, directory: Path) -> None:
    """Ten MNIST test digits, dark on light, 120 px high, at uneven places on 200×200 JPEGs: at
    least nine read right."""
    from PIL import Image

    import mnist_lit
    from mnist_lit.lit.data import MNISTDataModule

    datamodule = MNISTDataModule(REAL_DATA)
    datamodule.setup("test")
    images, labels = datamodule.test.tensors
    generator = torch.Generator().manual_seed(0)
    files = []
    for i in range(10):
        digit = Image.fromarray((255 - images[i].reshape(28, 28) * 255).to(torch.uint8).numpy()).resize(
            (120, 120), Image.Resampling.BICUBIC
        )
        page = Image.new("RGB", (200, 200), "white")
        page.paste(digit, tuple(torch.randint(0, 81, (2,), generator=generator).tolist()))
        files.append(directory / f"{i}.jpg")
        page.save(files[-1], quality=85)
    predicted = mnist_lit.load(run).predict(files).argmax(-1)
    assert (predicted == labels[:10]).sum() >= 9


@pytest.mark.mnist
@pytest.mark.skipif(not REAL_DATA, reason="set MNIST_LIT_DATA to the real MNIST")
def test_predict_reads_real_digits_as_mnist_made_them(tmp_path, monkeypatch):
    from mnist_lit.nn import digits

    monkeypatch.chdir(tmp_path)
    fit("model=mlp", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", output_dir="run")

    def uncentred(digit: torch.Tensor) -> torch.Tensor:  # the digit in the corner, not by its centre of mass
        canvas = torch.zeros(28, 28)
        canvas[: digit.shape[0], : digit.shape[1]] = digit
        return canvas

    bites(lambda: redrawn_digits_recognised(tmp_path / "run", tmp_path), monkeypatch, (digits, "_centred", uncentred))
