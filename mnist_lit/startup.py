"""What a command sets for its process as it first imports torch, Lightning and the rest.

- The cyclic garbage collector stays off while they load, and what they made is then frozen
  (gc.freeze). Their million-odd objects live as long as the process, yet while they load each
  full collection walks all of them again, and every full collection after does too: a visible
  share of a short sweep, most of it during the imports (benchmarks/RESULTS.md).
- Denormal floats are flushed to zero (`flush_denormals`)."""

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Around a command's first import of torch. Once torch is in (a second job, a test session,
    a notebook), it does nothing: a freeze then would also take objects that may become garbage,
    and torch's threads may have started."""
    first = "torch" not in sys.modules
    collecting = first and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.enable()
        if first and "torch" in sys.modules:
            flush_denormals()


def flush_denormals() -> None:
    """Floats below 1.2e-38 taken as zero, as TensorFlow runs Keras's steps, in this thread and in
    every thread torch starts after it (a thread starts in the floating-point mode of the one that
    starts it), so before torch's first parallel operation.

    Adam's first moment of a weight whose gradient stays zero (a pixel at MNIST's edge, nearly
    always 0) shrinks ×0.9 a step into that range within ~800 steps, and x86 computes on such
    numbers many times slower: a share of the first layer's moments after one epoch, enough to
    slow its training visibly (benchmarks/RESULTS.md). What they stand for is far below what a step
    can change in a weight, so the trained weights are the same."""
    import torch

    torch.set_flush_denormal(True)
