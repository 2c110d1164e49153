"""Jobs of one shape trained side by side as one batched network (the engine's `Batched` form),
inside Lightning, for the stacked launcher.

Each network starts from its job's seed and sees the images its job sees alone, in its seed's
shuffle, so every job's numbers are its own run's up to float rounding. Each job still gets exactly
the files a run of its own writes (train.py), checkpoints included.
"""

import json
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mnist_lit import build
from mnist_lit.common import files
from mnist_lit.config.schema import TrainerConfig
from mnist_lit.lit import console
from mnist_lit.lit.data import Shuffled
from mnist_lit.lit.history import History
from mnist_lit.lit.module import Diverged
from mnist_lit.lit.saving import run_checkpoints
from mnist_lit.nn.engine import Batched, batches
from mnist_lit.nn.loss import image_losses
from mnist_lit.nn.stacked import StackedNetwork
from mnist_lit.nn.summary import count, summary
from mnist_lit.reports import mistakes
from mnist_lit.reports.history import plot, write_csv
from mnist_lit.sweeps.summary import record_failure

log = logging.getLogger(__name__)


class Job:
    """One job of a stack: its config, its directory, its history and its checkpoints."""

    def __init__(self, cfg: DictConfig, directory: Path) -> None:
        self.cfg, self.directory = cfg, Path(directory)
        self.history = History(self.directory)
        self.best, self.last = run_checkpoints(self.directory)
        self.failed = False


class Stack(L.LightningModule):
    """Trains the networks of `jobs` (one shape, one learning rate) side by side."""

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__()
        self.jobs = jobs
        nets = []
        for job in jobs:
            L.seed_everything(job.cfg.seed, verbose=False)  # each network starts as its job's would alone
            nets.append(build.classifier(job.cfg).net)
        self.net = StackedNetwork(nets)
        self.single = nets[0]
        self.data = build.datamodule(jobs[0].cfg)
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        self.data.trainer = self.trainer
        self.data.prepare_data()
        self.data.setup(stage)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.jobs[0].cfg.optimizer, _convert_="all")(self.net.parameters())

    def train_dataloader(self) -> DataLoader:
        execution = self.data.batch_size * self.data.steps_per_execution
        return DataLoader(range(batches(len(self.data.train), execution)), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()

    def on_train_epoch_start(self) -> None:
        # Each job's order is the one its own run's sampler gives it this epoch.
        orders = []
        for job in self.jobs:
            sampler = Shuffled(self.data.train, num_replicas=1, rank=0, shuffle=True, seed=job.cfg.data.seed)
            sampler.set_epoch(self.current_epoch)
            orders.append(torch.tensor(list(sampler)))
        self.orders = torch.stack(orders).to(self.device)
        self.sums = torch.zeros(3, len(self.jobs), device=self.device)  # train loss, right, images
        self.minibatches = 0

    def on_train_start(self) -> None:
        self.engine = Batched(self.net, self.optimizers().optimizer)

    def training_step(self, index: int) -> None:
        images, labels = self.data.train.tensors
        execution = self.data.batch_size * self.data.steps_per_execution
        order = self.orders[:, index * execution : (index + 1) * execution]
        outcome = self.engine(images, labels, order, self.data.batch_size)
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for _ in range(outcome.losses.shape[1]):  # Lightning counted none of these optimizer steps
            progress.increment_ready()
            progress.increment_completed()
        # Each image weighs in with its mini-batch's mean loss; the last mini-batch may be short.
        losses = outcome.losses.repeat_interleave(self.data.batch_size, dim=1)[:, : order.shape[1]]
        right = (outcome.predictions == outcome.labels).sum(1).float()
        self.sums += torch.stack([losses.sum(1), right, torch.full_like(right, order.shape[1])])
        self._stop_diverged(outcome.losses)
        self.minibatches += outcome.losses.shape[1]

    def _stop_diverged(self, losses: torch.Tensor) -> None:
        """A job whose loss is no longer finite fails alone, with a run's own message; the others train on."""
        bad = ~torch.isfinite(losses)
        for k in bad.any(1).nonzero().flatten().tolist():
            job = self.jobs[k]
            if job.failed:
                continue
            i = int(bad[k].nonzero()[0])
            job.failed = True
            record_failure(job.directory, Diverged(
                f"The loss became {losses[k, i].item()} at epoch {self.current_epoch + 1}, mini-batch "
                f"{self.minibatches + i + 1}: lower optimizer.lr (now {job.cfg.optimizer.lr:g}) and start again"
            ))

    def on_validation_epoch_start(self) -> None:
        self.val_sums = torch.zeros(3, len(self.jobs), device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        logits = self.net(images.expand(len(self.jobs), -1, -1))
        target = labels.expand(len(self.jobs), -1)
        loss = image_losses(logits, target).sum(1)
        right = (logits.argmax(-1) == target).sum(1).float()
        self.val_sums += torch.stack([loss, right, torch.full_like(right, len(labels))])

    def on_train_epoch_end(self) -> None:
        train, val = (sums[:2] / sums[2] for sums in (self.sums, self.val_sums))
        base = self.trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        for k, job in enumerate(self.jobs):
            if job.failed:
                continue
            values = dict(zip(("loss", "accuracy", "val_loss", "val_accuracy"), (*train[:, k].tolist(), *val[:, k].tolist())))
            for name, value in values.items():
                job.history.history[name].append(value)
            log.info("Job %s: epoch %d/%d - %s", job.directory.name, self.current_epoch + 1, self.trainer.max_epochs,
                     " - ".join(f"{name}: {value:.4f}" for name, value in values.items()))
            write_csv(job.history.history, job.directory / "metrics.csv")
            self._save(job, k, base, values["val_accuracy"])

    def _save(self, job: Job, k: int, base: dict, val_accuracy: float) -> None:
        """Job k's last.ckpt (and best-*.ckpt when it improved), as its own run would have written them."""
        checkpoint = dict(base)
        checkpoint["state_dict"] = {f"net.{name}": tensor for name, tensor in self.net.state_of(k).items()}
        checkpoint["hyper_parameters"] = OmegaConf.to_container(job.cfg, resolve=True)
        checkpoint["processes"] = 1
        optimizer = base["optimizer_states"][0]
        checkpoint["optimizer_states"] = [{
            "state": {i: {name: value if name == "step" else value[k].clone() for name, value in state.items()}
                      for i, state in optimizer["state"].items()},
            "param_groups": optimizer["param_groups"],
        }]
        best, last = job.best, job.last
        if best.best_model_score is None or val_accuracy > best.best_model_score:
            old = best.best_model_path
            best.best_model_path = best.format_checkpoint_name({"epoch": self.current_epoch, "val_accuracy": val_accuracy})
            best.best_model_score = torch.tensor(val_accuracy)
            best.best_k_models = {best.best_model_path: best.best_model_score}
            best.kth_best_model_path, best.kth_value = best.best_model_path, best.best_model_score
        else:
            old = None
        last.best_model_path = last.format_checkpoint_name({})
        checkpoint["callbacks"] = {
            **{key: state for key, state in base["callbacks"].items() if key.startswith("Timer")},  # the stack's time
            job.history.state_key: job.history.state_dict(),
            best.state_key: best.state_dict(),
            last.state_key: last.state_dict(),
        }
        files.directory(Path(last.dirpath))
        with files.atomic_write(last.best_model_path, "wb") as f:
            torch.save(checkpoint, f)
        if old is not None:
            with files.atomic_write(best.best_model_path, "wb") as f:
                torch.save(checkpoint, f)
            if old:
                Path(old).unlink(missing_ok=True)

    def finish(self, seconds: float) -> None:
        """Each job's remaining files: history.png, summary.txt, results.json, mistakes, on the test images."""
        images, labels = self.data.test.tensors
        with torch.no_grad():
            logits = torch.cat([self.net(chunk.expand(len(self.jobs), -1, -1)) for chunk in images.split(10_000)], 1)
        for k, job in enumerate(self.jobs):
            if job.failed:
                continue
            net = self.single
            net.load_state_dict(self.net.state_of(k))
            files.figure(job.directory / "history.png", plot(job.history.history))
            files.text(job.directory / "summary.txt", summary(net) + "\n")
            loss = image_losses(logits[k], labels).mean().item()
            accuracy = (logits[k].argmax(-1) == labels).float().mean().item()
            per_class = mistakes.write(job.directory, images, labels, logits[k].softmax(-1).float(), self.data.names)
            results = {
                "test_loss": loss, "test_accuracy": accuracy, "parameters": count(net),
                # This job's share of the stack's training time, so that a sweep's seconds add up.
                "train_seconds": seconds / len(self.jobs),
                "torch_threads": torch.get_num_threads(), "epochs": len(job.history.history["loss"]),
                "per_class_accuracy": per_class, "best_checkpoint": job.best.best_model_path,
                "stacked_with": len(self.jobs), "stack_train_seconds": seconds,
            }
            files.text(job.directory / "results.json", json.dumps(results, indent=2) + "\n")


def train_stack(jobs: list[Job]) -> None:
    """Train the jobs' networks as one, inside Lightning, and leave each job its run's files."""
    cfg = jobs[0].cfg
    stack = Stack(jobs)
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[timer := Timer()],
    )
    with console.quiet():
        trainer.fit(stack)
    stack.finish(timer.time_elapsed("train"))


def shape(cfg: DictConfig) -> str:
    """What the jobs of one stack share: everything but the seed (and so the initial weights and
    the shuffle) and the initialisation; the learning rate too, since torch's Adam takes one per tensor."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("seed")
    settings["data"].pop("seed")
    settings["model"].pop("init")
    return json.dumps(settings, sort_keys=True)


# Trainer settings a stack honours as a run would; any other that differs from its default makes a
# job run alone (clipping, accumulation, limits, max_steps, several devices, mixed precision, ...).
STACK_HONOURS = {"max_epochs", "accelerator", "enable_progress_bar", "enable_model_summary", "num_sanity_val_steps", "benchmark"}
# What the batched step computes, and nothing else: each image's cross-entropy (both of the
# tutorial's losses), elementwise activations without parameters or randomness (not PReLU, not
# RReLU), and an optimizer whose update is elementwise, so that one step over the stacked tensors
# is each network's own.
STACKED_LOSSES = ("mnist_lit.nn.loss.CategoricalCrossentropy", "torch.nn.CrossEntropyLoss")
NOT_STACKED_ACTIVATIONS = ("prelu", "rrelu")
STACKED_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW")


def why_alone(cfg: DictConfig) -> str | None:
    """Why a stack would not train this job exactly as its own run would, or None if it would."""
    defaults = OmegaConf.structured(TrainerConfig)
    changed = [key for key in defaults if key not in STACK_HONOURS and cfg.trainer[key] != defaults[key]]
    reasons = (
        (changed, lambda: f"trainer.{changed[0]}={cfg.trainer[changed[0]]} is not stackable"),
        (cfg.trainer.max_epochs is None, lambda: "trainer.max_epochs=null: a stack trains a number of epochs"),
        (cfg.resume is not None, lambda: "it resumes a run"),
        (cfg.logger is not None, lambda: "it sends its metrics to a logger"),
        (cfg.early_stopping.patience is not None, lambda: "it stops early"),
        (cfg.data.val_size != 0, lambda: "data.val_size holds images out"),
        (cfg.loss._target_ not in STACKED_LOSSES, lambda: f"loss {cfg.loss._target_} is not stackable"),
        (cfg.optimizer._target_ not in STACKED_OPTIMIZERS, lambda: f"optimizer {cfg.optimizer._target_} is not stackable"),
        # Without hidden layers the activation is never used.
        (cfg.model.hidden and cfg.model.activation in NOT_STACKED_ACTIVATIONS,
         lambda: f"activation {cfg.model.activation} is not stackable"),
    )
    return next((reason() for applies, reason in reasons if applies), None)
