"""A sweep over seeds: each configuration's metrics across its seeds, with intervals, and whether it
differs from the best beyond seed noise, on made-up sweeps whose truth is known."""

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_lit.sweeps import seeds
from mnist_lit.sweeps.summary import summarise

# Each seed's own luck, shared by every configuration trained from it (data.seed follows seed).
LUCK = [0.0012, -0.0008, 0.0003, -0.0015, 0.0009, 0.0001, -0.0004, 0.0006]
# Each job's own noise on top, small beside the luck.
NOISE = [0.0002, -0.0001, 0.0001, -0.0002, 0.0000, 0.0001, -0.0001, 0.0002]


def make_sweep(root: Path, accuracies: dict[str, float], seeds_: int = 8, noise: list[float] = NOISE) -> Path:
    """Job directories as a sweep leaves them, one per configuration and seed."""
    job = 0
    for index, (configuration, accuracy) in enumerate(accuracies.items()):
        for seed in range(seeds_):
            directory = root / str(job)
            (directory / ".hydra").mkdir(parents=True)
            OmegaConf.save(OmegaConf.create([configuration, f"seed={seed}"]), directory / ".hydra" / "overrides.yaml")
            OmegaConf.save(OmegaConf.create({"seed": seed}), directory / ".hydra" / "config.yaml")
            final = accuracy + LUCK[seed] + noise[(seed + index) % len(noise)]
            rows = ["epoch,loss,accuracy,val_loss,val_accuracy", f"1,1,0.5,0.3,{final - 0.01}", f"2,1,0.6,0.2,{final}"]
            (directory / "metrics.csv").write_text("\n".join(rows) + "\n")
            (directory / "results.json").write_text(json.dumps({"parameters": 79510, "train_seconds": 1.0}))
            job += 1
    return root


def configurations(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "configurations.csv") as f:
        return list(csv.DictReader(f))


def test_students_t_is_the_tables():
    assert seeds.t_quantile(0.975, 7) == pytest.approx(2.3646, abs=1e-4)
    assert seeds.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert seeds.t_two_sided_p(2.3646243, 7) == pytest.approx(0.05, abs=1e-6)
    assert seeds.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_configurations_that_truly_differ_are_told_apart(tmp_path):
    sweep = make_sweep(tmp_path, {"model.activation=relu": 0.978, "model.activation=tanh": 0.977})
    summarise(sweep)
    best, other = configurations(sweep)
    assert (best["configuration"], best["n"], other["n"]) == ("model.activation=relu", "8", "8")
    finals = [0.978 + LUCK[s] + NOISE[s % len(NOISE)] for s in range(8)]
    mean, sd = sum(finals) / 8, math.sqrt(sum((f - sum(finals) / 8) ** 2 for f in finals) / 7)
    half = 2.3646 * sd / math.sqrt(8)
    assert float(best["val_accuracy_mean"]) == pytest.approx(mean)
    assert float(best["val_accuracy_low"]) == pytest.approx(mean - half, abs=1e-6)
    assert float(best["val_accuracy_high"]) == pytest.approx(mean + half, abs=1e-6)
    # One seed's luck spreads each configuration wider than the gap; the seed-by-seed difference does not.
    assert float(other["val_accuracy_high"]) > float(best["val_accuracy_low"])
    assert float(other["difference_to_best"]) == pytest.approx(-0.001, abs=2e-4)
    assert float(other["difference_high"]) < 0 and other["beyond_noise"] == "yes"
    table = (sweep / "summary.md").read_text()
    assert "| model.activation=tanh | 8 |" in table and "differs beyond seed noise" in table


def test_configurations_that_do_not_differ_are_not_told_apart(tmp_path):
    sweep = make_sweep(tmp_path, {"model.activation=relu": 0.977, "model.activation=tanh": 0.977})
    summarise(sweep)
    _, other = configurations(sweep)
    assert float(other["difference_low"]) < 0 < float(other["difference_high"])
    assert other["beyond_noise"] == "no" and float(other["p_holm"]) > 0.05
    assert "within seed noise" in (sweep / "summary.md").read_text()


def test_a_sweep_of_one_seed_a_configuration_looks_as_before(tmp_path):
    sweep = make_sweep(tmp_path, {"model.activation=relu": 0.978, "model.activation=tanh": 0.976}, seeds_=1)
    summarise(sweep)
    assert not (sweep / "configurations.csv").exists()
    assert "Across seeds" not in (sweep / "summary.md").read_text()
    assert (sweep / "summary.png").read_bytes().startswith(b"\x89PNG")
