#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go: the GPU tests, the epoch benchmark captured and
# eager, bf16-mixed, and the wall time of a whole 10-epoch MLP run. Run from the repository root:
#
#   MNIST_LIT_DATA=/path/to/data bash benchmarks/gpu_check.sh
#
# On a machine without hydra-core, omegaconf and antlr4, build their wheels where pip works
# (pip wheel --no-deps -w wheels hydra-core omegaconf "antlr4-python3-runtime==4.9.3" .), carry
# them, and set WHEELS=wheels: they are installed into a private folder first.
set -euo pipefail
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/mnist_lit_site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/mnist_lit_site:$PWD PATH=/tmp/mnist_lit_site/bin:$PATH
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

# In this process, one GPU test after another; pytest-xdist (pyproject's addopts) may not be there.
python3 -m pytest -o addopts="" -q -m gpu -p no:cacheprovider tests/test_gpu.py
python3 benchmarks/epoch_speed.py --device cuda --repeats 1
python3 benchmarks/epoch_speed.py --device cuda --repeats 1 capture=false
python3 benchmarks/epoch_speed.py --device cuda --repeats 1 --models mlp trainer.precision=bf16-mixed
cd "$(mktemp -d)"
/usr/bin/time -f "whole run: %e s wall" python3 -m mnist_lit model=mlp trainer.accelerator=gpu trainer.enable_progress_bar=false | tail -3
