"""What a trained network leaves in its run's directory beside the history: summary.txt (Keras's
summary()), and after the test, results.json with the confusion matrix and mistakes
(reports/mistakes.py). A run and each job of a stack write them through these two functions."""

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_lit.common import files
from mnist_lit.nn.summary import count, summary
from mnist_lit.reports import mistakes
from mnist_lit.reports.pictures import Picture


def write_summary(directory: Path, net: nn.Module) -> str:
    """summary.txt; returns it, for the run's log."""
    text = summary(net)
    files.text(directory / "summary.txt", text + "\n")
    return text


def write(
    directory: Path,
    net: nn.Module,
    test: Mapping[str, float | None],
    probabilities: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    draw: Callable[[Picture], None] = Picture.write,
    **facts: Any,
) -> dict[str, Any]:
    """results.json, confusion_matrix.csv/.png and mistakes.png for the final weights' `test`
    metrics (test_loss, test_accuracy) and `probabilities` of the test `images`; `facts` (the
    training's seconds, threads, epochs, best checkpoint, ...) go into results.json as they are;
    `draw` is given the pictures."""
    per_class = mistakes.write(directory, images, labels, probabilities, names, draw)
    return _write_json(directory, net, test, per_class, facts)


def write_untested(directory: Path, net: nn.Module, **facts: Any) -> dict[str, Any]:
    """results.json of a run whose test was not run (trainer.limit_test_batches=0): null for what
    the test would have measured."""
    return _write_json(directory, net, dict.fromkeys(("test_loss", "test_accuracy")), None, facts)


def _write_json(
    directory: Path,
    net: nn.Module,
    test: Mapping[str, float | None],
    per_class: dict[str, float] | None,
    facts: dict[str, Any],
) -> dict[str, Any]:
    results = {
        "test_loss": test["test_loss"],
        "test_accuracy": test["test_accuracy"],
        "parameters": count(net),
        **facts,
        "per_class_accuracy": per_class,
    }
    files.text(directory / "results.json", json.dumps(results, indent=2) + "\n")
    return results
