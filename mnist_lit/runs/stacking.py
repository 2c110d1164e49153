"""A stacked sweep's jobs of one shape trained as one batched network (lit/stack.py), each job
still an ordinary job: the builder makes its network and what its run keeps, the stack trains them
together, and each job's directory gets a run's files through the functions a run writes them with.
Which jobs a stack may take (why_alone) and which go together (shape) is decided here too."""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mnist_lit.config.checks import plain
from mnist_lit.config.schema import Config, Stacked, policies
from mnist_lit.lit import console
from mnist_lit.lit.stack import Stack, tested
from mnist_lit.reports import results
from mnist_lit.reports.pictures import Picture, write_all
from mnist_lit.runs import build, machine
from mnist_lit.sweeps.summary import record_failure


class Job:
    """One job of a stack: its config and directory, and its network with what its run keeps."""

    def __init__(self, cfg: DictConfig, directory: Path) -> None:
        self.cfg, self.directory = cfg, Path(directory)
        self.member = build.member(cfg, self.directory, label=f"Job {self.directory.name}: ")
        self.error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.member.failure is not None


def train_stack(jobs: list[Job]) -> None:
    """Train the jobs' networks as one, inside Lightning, and leave each job its run's files."""
    cfg = jobs[0].cfg
    try:
        # One process: the stack never forks ranks.
        with console.quiet(), machine.cuda_check_without_nvml():
            trainer, timer = build.stack_trainer(cfg)
            stack = Stack([job.member for job in jobs], build.optimizer(cfg), build.fast_datamodule(cfg), timer)
            trainer.fit(stack)
    finally:
        for job in jobs:
            if job.member.failure is not None:
                record_failure(job.directory, job.member.failure)
    seconds = timer.time_elapsed("train")
    # The test images stay on the device they trained on, while Lightning's teardown has put the
    # stack back on the CPU: tested where the stack is.
    images, labels = (tensor.to(stack.device) for tensor in stack.data.test.tensors)
    # Drawn together at the end, in as many processes as the run has threads: a job's three
    # pictures take longer than all of its other files.
    pictures: list[Picture] = []
    staying = {id(member): k for k, member in enumerate(stack.members)}
    for job in jobs:
        member = job.member
        # A network that left the stack, pruned, has the weights it left with.
        final = member.final if member.final is not None else stack.net.state_of(staying[id(member)])
        if not job.failed:
            member.net.load_state_dict(final)
    for job, (test, probabilities) in zip(jobs, tested([job.member.net for job in jobs], images, labels), strict=True):
        if job.failed:
            continue
        net = job.member.net
        pictures.append(job.member.history.picture())
        results.write_summary(job.directory, net)
        results.write(
            job.directory,
            net,
            test,
            probabilities,
            images,
            labels,
            stack.data.names,
            draw=pictures.append,
            # This job's share of the stack's training time, so that a sweep's seconds add up.
            train_seconds=seconds / len(jobs),
            torch_threads=torch.get_num_threads(),
            epochs=len(job.member.history.history["loss"]),
            best_checkpoint=job.member.checkpoints.best_path,
            stacked_with=len(jobs),
            stack_train_seconds=seconds,
            **({"pruned_at_epoch": job.member.pruned_at} if job.member.pruned_at is not None else {}),
        )
    write_all(pictures, torch.get_num_threads())


def shape(cfg: DictConfig) -> str:
    """What the jobs of one stack share: every setting but those each network of a stack has of
    its own (config/schema.py says which: the seed, and so the initial weights and the shuffle, the
    initialisation, the hidden layers' widths and activation, which nn/stacked.py pads and activates
    per network, the learning rate, which StackedAdam takes per network, and the loss, both of the
    tutorial's being one computation), and the depth; and data.seed where data.val_size holds images out."""
    settings = plain(cfg)
    for key, declared in policies("stack").items():
        if declared == Stacked.OWN:
            *groups, name = key.split(".")
            node = settings
            for group in groups:
                node = node[group]
            node.pop(name)
    settings["depth"] = len(cfg.model.hidden)
    if cfg.data.val_size:
        # data.seed draws the held-out images, and a stack validates all its networks on one set.
        settings["data"]["seed"] = cfg.data.seed
    return json.dumps(settings, sort_keys=True)


# What the batched step computes, and nothing else: each image's cross-entropy (both of the
# tutorial's losses), elementwise activations without parameters or randomness (not PReLU, not
# RReLU), and an optimizer whose update is elementwise, so that one step over the stacked tensors
# is each network's own.
STACKED_LOSSES = ("mnist_lit.nn.loss.CategoricalCrossentropy", "torch.nn.CrossEntropyLoss")
NOT_STACKED_ACTIVATIONS = ("prelu", "rrelu")
STACKED_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW")


def why_alone(cfg: DictConfig) -> str | None:
    """Why a stack would not train this job exactly as its own run would, or None if it would."""
    defaults = OmegaConf.structured(Config)
    why = policies("alone")
    changed = [
        key
        for key, declared in policies("stack").items()
        if declared == Stacked.ALONE and OmegaConf.select(cfg, key) != OmegaConf.select(defaults, key)
    ]
    reasons: tuple[tuple[object, Callable[[], str]], ...] = (
        (changed, lambda: why[changed[0]] or f"{changed[0]}={OmegaConf.select(cfg, changed[0])} is not stackable"),
        (cfg.trainer.max_epochs is None, lambda: "trainer.max_epochs=null: a stack trains a number of epochs"),
        (cfg.loss._target_ not in STACKED_LOSSES, lambda: f"loss {cfg.loss._target_} is not stackable"),
        (
            cfg.optimizer._target_ not in STACKED_OPTIMIZERS,
            lambda: f"optimizer {cfg.optimizer._target_} is not stackable",
        ),
        # Without hidden layers the activation is never used.
        (
            cfg.model.hidden and cfg.model.activation in NOT_STACKED_ACTIVATIONS,
            lambda: f"activation {cfg.model.activation} is not stackable",
        ),
    )
    return next((reason() for applies, reason in reasons if applies), None)
