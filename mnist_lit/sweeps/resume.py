"""`resume=<sweep dir>`: each job of a stopped sweep is kept, trained on from its own last
checkpoint, or trained again from the start with what it wrote before set aside."""

import logging
import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_lit.config.schema import Resume
from mnist_lit.sweeps.summary import ERROR_FILE, read_metrics

log = logging.getLogger(__name__)


def resume_job(job_dir: Path, cfg: DictConfig) -> bool:
    """A job of a resumed sweep: True if it is kept, having finished the training the sweep now
    asks for. Otherwise it trains on from its own last checkpoint (cfg.resume) if that holds the
    start of the same training; else again from the start, what it wrote before set aside."""
    from mnist_lit.config.checkpoints import differences, read, resumed_as  # torch, once a job runs

    num, done, sweep = HydraConfig.get().job.num, finished(job_dir), cfg.resume
    last = job_dir / "checkpoints" / "last.ckpt"
    cfg.resume = None
    if not last.exists():
        (job_dir / ERROR_FILE).unlink(missing_ok=True)
        return False
    differ = {key: values for key, values in differences(read(last)["config"], cfg).items() if key != "resume"}
    if done and all(resumed_as(key) == Resume.UNSEEN for key in differ):
        log.info("Job %s finished in %s before: kept as it is", num, sweep)
        return True
    before, now = differ.get("trainer.max_epochs", (None, None))
    only_fewer = all(resumed_as(key) == Resume.UNSEEN or key == "trainer.max_epochs" for key in differ)
    if done and only_fewer and isinstance(before, int) and isinstance(now, int) and 0 < now < before:
        # A checkpoint cannot be trained back to fewer epochs: keep the longer training, and say so.
        log.info(
            "Job %s finished %d epochs in %s before; the sweep now asks for trainer.max_epochs=%d: kept as it is, "
            "with its %d epochs (a new sweep trains %d)",
            num,
            before,
            sweep,
            now,
            before,
            now,
        )
        return True
    (job_dir / ERROR_FILE).unlink(missing_ok=True)
    other = [key for key in differ if resumed_as(key) not in (Resume.UNSEEN, Resume.UNTIL)]
    if not other:
        cfg.resume = str(last)
        return False
    before, now = differ[other[0]]
    moved = set_aside(job_dir)
    log.info(
        "Job %s was trained with %s=%s, the sweep now asks for %s=%s: it trains again from the start (what it wrote "
        "before is in %s)",
        num,
        other[0],
        before,
        other[0],
        now,
        moved,
    )
    return False


def set_aside(job_dir: Path) -> Path:
    """Move what a job wrote into <job>/replaced-N, so that training it again loses nothing; its
    .hydra/ (already the new job's) and its log (which Hydra appends to) stay."""
    n = 1
    while (job_dir / f"replaced-{n}").exists():
        n += 1
    target = job_dir / f"replaced-{n}"
    target.mkdir()
    for path in job_dir.iterdir():
        if path.name != ".hydra" and path.suffix != ".log" and not path.name.startswith("replaced-"):
            path.rename(target / path.name)
    return target


def is_sweep(path: Path) -> bool:
    return (path / "multirun.yaml").is_file()


def finished(job_dir: Path) -> bool:
    return (job_dir / "results.json").exists() and not (job_dir / ERROR_FILE).exists()


def last_value(metrics_csv: Path, metric: str) -> float:
    values = read_metrics(metrics_csv, (metric,))[metric]
    return values[-1] if values else math.nan
