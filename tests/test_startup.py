"""What a command sets for its process as it first imports torch (mnist_lit/startup.py), checked in
a process of its own, as a command starts."""

import subprocess
import sys

import pytest

IMPORT_AS_A_COMMAND = """
import gc
from mnist_lit.startup import heavy_imports
with heavy_imports():
    import lightning, torch
torch.set_num_threads(2)
denormal = torch.full((4_000_000,), 1e-39)  # split between the two threads
print((denormal * 1.0).count_nonzero().item(), gc.isenabled(), gc.get_freeze_count())
"""


@pytest.mark.slow
def test_denormals_are_zero_in_every_thread_and_the_imports_are_frozen_out_of_collections():
    done = subprocess.run([sys.executable, "-c", IMPORT_AS_A_COMMAND], capture_output=True, text=True, check=True)
    nonzero, collecting, frozen = done.stdout.split()
    assert nonzero == "0"  # 4,000,000 where a thread keeps denormals
    assert collecting == "True" and int(frozen) > 100_000
