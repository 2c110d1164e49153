#!/usr/bin/env bash
# Mutation testing with mutmut: each mutant of the code that pyproject's [tool.mutmut] names
# (only_mutate) runs the tests that cover it (pytest_add_cli_args_test_selection); a mutant that
# no test fails "survives". Not part of CI: on 2 cores its ~1,600 mutants (nn/, lit/module.py,
# history.py, pruning.py) take over three hours, most of it survivors of code that every training
# calls, each running every test that trains (a minute or more).
#
#   bash tests/mutation.sh                     # the score: killed / (killed + survived)
#   bash tests/mutation.sh "mnist_lit.lit.*"   # the Lightning layer's mutants alone, all run again
#   .venv/bin/mutmut results          # the survivors; mutmut show <name> shows one
#
# A run without names goes on from the last (mutants/ keeps the results; delete it to start again);
# one with names runs those mutants again. A changed test selection (pyproject) runs all again.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "mutmut==3.8.*"
mutmut run --max-children "${MUTATION_CHILDREN:-2}" "$@" || true
mutmut export-cicd-stats
python - <<'PY'
import json

stats = json.load(open("mutants/mutmut-cicd-stats.json"))
killed, survived = stats["killed"], stats["survived"]
print(f"killed {killed}, survived {survived}, timed out {stats.get('timeout', 0)}, no tests {stats.get('no_tests', 0)}")
print(f"score {killed / max(killed + survived, 1):.1%}")
PY
