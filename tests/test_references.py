"""What the code's comments and the docs point a reader to is there: every tests/… file they name."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READ = [
    "README.md",
    ".ci/run",
    ".ci/versions",
    "pyproject.toml",
    "docs/*.md",
    "mnist_lit/**/*.py",
    "hydra_plugins/**/*.py",
]
READ += ["benchmarks/*.py", "benchmarks/*.sh", "benchmarks/*.md", "tests/**/*.py", "conf/**/*.yaml"]


def test_every_test_file_named_in_a_comment_or_a_doc_exists():
    named = {
        (path.relative_to(ROOT), name)
        for pattern in READ
        for path in ROOT.glob(pattern)
        for name in re.findall(r"\btests/[\w/]+\.py\b", path.read_text(encoding="utf-8"))
    }
    assert len(named) > 10  # the pattern still finds what the tree names
    assert [(str(where), name) for where, name in sorted(named) if not (ROOT / name).is_file()] == []
