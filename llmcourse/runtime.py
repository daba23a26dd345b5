"""Torch's CPU thread count: one fixed value for the notebooks, and a block that sets it for a while."""

from __future__ import annotations

import contextlib

N_THREADS = 1
"""Torch CPU threads. Fixed, because float reductions (and so recorded outputs) can depend on it.
One, because the course's models are tiny: a second thread gains little (training throughput
about 1.7x at best), and on a busy 2-core machine a parallel region that waits for a
descheduled thread made chapter 04 run 220 s instead of 9 s."""


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` CPU threads inside the block; the previous count is restored after.

    For code that may be called outside `setup` (benchmarks, training loops) and must not
    depend on, or change, the caller's thread count.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
