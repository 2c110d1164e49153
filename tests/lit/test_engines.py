"""The two engines are one training: Lightning's loop (the plain Classifier) and the fast engine
(FastClassifier, Keras's steps_per_execution) write the same numbers, a run resumes on either, and
engine=auto takes Lightning's loop for what the fast engine does not do, saying why."""

import csv
import logging
import math

import lightning as L
import pytest
import torch

from mnist_lit import fit
from mnist_lit.common.errors import ConfigError
from mnist_lit.lit.fast import FastClassifier
from mnist_lit.lit.module import Diverged
from tests.conftest import last_weights

# 640 tiny training images: 20 mini-batches of 32 an epoch, in executions of 4.
TINY = ("trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.steps_per_execution=4")


class Trained(L.Callback):
    """Which module trained, and the global step at each epoch's end."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_start(self, trainer, module):
        self.fast = isinstance(module, FastClassifier)

    def on_train_epoch_end(self, trainer, module):
        self.steps.append(trainer.global_step)


def metrics(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k not in ("seconds",)} for row in csv.DictReader(f)]


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_both_engines_write_the_same_metrics(tiny_env, model):
    engines = {}
    for engine in ("fast", "lightning"):
        engines[engine] = trained = Trained()
        fit(f"model={model}", *TINY, f"engine={engine}", output_dir=engine, callbacks=[trained])
    assert engines["fast"].fast and not engines["lightning"].fast
    assert engines["fast"].steps == engines["lightning"].steps == [20, 40]
    fast, lightning = metrics(tiny_env / "fast"), metrics(tiny_env / "lightning")
    assert len(fast) == len(lightning) == 2
    for a, b in zip(fast, lightning, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-5), name


def test_a_run_resumes_on_the_other_engine_and_back(tiny_env):
    straight = Trained()
    fit(*TINY, "trainer.max_epochs=3", "engine=fast", output_dir="straight", callbacks=[straight])
    legs = [Trained() for _ in range(3)]
    fit(*TINY, "trainer.max_epochs=1", "engine=fast", output_dir="1", callbacks=[legs[0]])
    fit(*TINY, "trainer.max_epochs=2", "engine=lightning", "resume=1", output_dir="2", callbacks=[legs[1]])
    fit(*TINY, "trainer.max_epochs=3", "engine=fast", "resume=2", output_dir="3", callbacks=[legs[2]])
    assert [leg.fast for leg in legs] == [True, False, True]
    assert [leg.steps for leg in legs] == [[20], [40], [60]] and straight.steps == [20, 40, 60]
    resumed, whole = last_weights(tiny_env / "3"), last_weights(tiny_env / "straight")
    assert all(torch.allclose(resumed[k], whole[k], rtol=1e-5, atol=1e-7) for k in whole)
    assert [row["epoch"] for row in metrics(tiny_env / "3")] == [1, 2, 3]


def test_auto_trains_in_lightnings_loop_what_the_fast_engine_does_not_do(tiny_env, caplog):
    trained = Trained()
    with caplog.at_level(logging.INFO, logger="mnist_lit.runs.build"):
        fit(*TINY, "trainer.gradient_clip_val=0.5", output_dir="clipped", callbacks=[trained])
    assert not trained.fast and trained.steps == [20, 40]
    said = [r.getMessage() for r in caplog.records if "Lightning's loop trains this run" in r.getMessage()]
    assert said == [
        "Lightning's loop trains this run (engine=lightning): the fast engine does not do trainer.gradient_clip_val=0.5"
    ]
    # A limit of 0 turns a loop off, which counts no batches: the fast engine does that.
    plain = Trained()
    history = fit(*TINY, "trainer.limit_val_batches=0", output_dir="plain", callbacks=[plain])
    assert plain.fast and all(math.isnan(loss) for loss in history["val_loss"])


@pytest.mark.parametrize(
    "setting",
    [
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
        "trainer.max_steps=7",
        "trainer.val_check_interval=8",
        "trainer.detect_anomaly=true",
        # What counts batches, which Lightning would count in executions.
        "trainer.limit_train_batches=3",
        "trainer.limit_test_batches=0.5",
        "trainer.fast_dev_run=true",
        "trainer.overfit_batches=2",
        "trainer.num_sanity_val_steps=2",
    ],
)
def test_engine_fast_refuses_what_it_does_not_do_in_one_line(tiny_env, setting):
    with pytest.raises(ConfigError) as refused:
        fit(*TINY, "engine=fast", setting, output_dir="run")
    assert str(refused.value) == (
        f"engine=fast does not do {setting}: leave engine=auto, which trains such a run in Lightning's loop"
    )
    assert not (tiny_env / "run" / "checkpoints").exists()


def test_a_diverging_run_in_lightnings_loop_stops_before_its_checkpoint(tiny_env):
    with pytest.raises(Diverged, match=r"^The loss became nan during epoch 1: lower optimizer.lr \(now 1e\+30\)"):
        fit(*TINY, "model=mlp", "engine=lightning", "optimizer.lr=1e30", output_dir="run")
    assert not list((tiny_env / "run").glob("checkpoints/*.ckpt"))
