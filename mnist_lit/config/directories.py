"""The resolvers that make a run's or a sweep's directory (conf/config.yaml's hydra.run.dir and
hydra.sweep.dir): a new one each time, so that nothing a run wrote is written over."""

import itertools
from pathlib import Path

from omegaconf import OmegaConf

from mnist_lit.common import files


def unique_dir(path: str) -> str:
    """Create `path`, or `path-1`, `path-2`, ... if taken, and return it: two runs started in the
    same second get two directories, and nothing a run wrote is written over."""
    base = Path(path)
    files.directory(base.parent)
    for n in itertools.count():
        candidate = base.with_name(f"{base.name}-{n}") if n else base
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError:
            files.directory(candidate)  # says why, in one line
        return str(candidate)
    raise AssertionError("unreachable")


def sweep_dir(resume: str | None, path: str) -> str:
    """A sweep's directory: the one `resume=` names when it is a sweep's (its jobs go on where
    they were), else a new one."""
    if resume and (Path(resume) / "multirun.yaml").is_file():
        return resume
    return unique_dir(path)


# Cached per composed config, so each run creates its directory exactly once.
OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sweep_dir", sweep_dir, use_cache=True, replace=True)
