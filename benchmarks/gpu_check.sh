#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go: the GPU tests (tests/test_gpu.py: captured against
# eager in every setting the engine takes, bf16-mixed and bf16-true, validation mid-epoch, no host
# synchronisation in replays, accumulation, clipping and anomaly mode in Lightning's loop, the stacked launcher, a
# GPU checkpoint resumed where CUDA is absent), then the epoch benchmark captured (both networks),
# eager and in bf16-mixed (the MLP), and the wall time of a whole 10-epoch MLP run. Every check
# runs, whatever an earlier one did; the last lines list each one's status and time, and the exit
# status is 1 if any failed.
# Each check has a time limit, 480 s in all, so that the whole stays within 8 minutes on one H100
# (guessed: this script has not yet run on a GPU; a check that runs out says "timed out").
#
#   MNIST_LIT_DATA=/path/to/data bash benchmarks/gpu_check.sh
#
# On a machine without hydra-core, omegaconf and antlr4, build their wheels where pip works
# (pip wheel --no-deps -w wheels hydra-core omegaconf "antlr4-python3-runtime==4.9.3" .), carry
# them, and set WHEELS=wheels: they are installed into a private folder first.
set -uo pipefail
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/mnist_lit_site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/mnist_lit_site:$PWD PATH=/tmp/mnist_lit_site/bin:$PATH
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

report=()
failed=0
# check NAME SECONDS COMMAND...: run it under a time limit, and note how it ended.
check() {
    local name=$1 limit=$2 started=$SECONDS status why
    shift 2
    echo "=== $name"
    timeout "$limit" "$@"
    status=$?
    local took=$((SECONDS - started))
    if [ "$status" -eq 0 ]; then
        report+=("passed  ${took}s  $name")
    else
        failed=1
        [ "$status" -eq 124 ] && why="timed out after ${limit}s" || why="exit $status"
        report+=("FAILED  ${took}s  $name ($why)")
    fi
}

# In this process, one GPU test after another (pytest-xdist, pyproject's addopts, may not be there);
# -rfE lists each failure at the end, and every test runs whatever the others do.
check "GPU tests" 180 python3 -m pytest -o addopts="" -q -rfE -m gpu -p no:cacheprovider tests/test_gpu.py
check "epoch, captured" 120 python3 benchmarks/epoch_speed.py --device cuda --repeats 1
check "epoch, eager" 70 python3 benchmarks/epoch_speed.py --device cuda --repeats 1 capture=false --models mlp
# The override before --models, which would take it for a model's name.
check "epoch, bf16-mixed" 70 python3 benchmarks/epoch_speed.py --device cuda --repeats 1 trainer.precision=bf16-mixed \
    --models mlp
run_dir="$(mktemp -d)"
check "whole 10-epoch MLP run" 40 bash -c "set -o pipefail; cd '$run_dir' && /usr/bin/time -f 'whole run: %e s wall' \
    python3 -m mnist_lit model=mlp trainer.accelerator=gpu trainer.enable_progress_bar=false 2>&1 | tail -3"

echo "=== summary"
printf '%s\n' "${report[@]}"
exit "$failed"
