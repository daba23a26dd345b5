"""What every chapter notebook does first: seeds, threads, print options, device."""

from __future__ import annotations

import random

import numpy as np

from llmcourse.runtime import N_THREADS


def setup(seed: int = 0) -> str:
    """Seed Python, NumPy and torch; fix torch's thread count; return the device to use.

    Returns ``"cuda"`` when a GPU is present, else ``"cpu"`` (the recorded outputs are from CPU).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(N_THREADS)
    np.set_printoptions(precision=3, suppress=True, linewidth=100)
    return "cuda" if torch.cuda.is_available() else "cpu"


def claim(statement: str, holds: bool, measured: str = "") -> None:
    """Assert a claim that the prose makes about a training or sampling result.

    Numbers that come out of training differ a little between CPUs, SIMD paths and GPUs, so the
    cell that shows them is not compared by the tests; the claim is, through the one stable line
    this prints. ``statement`` carries the margin (``"PPO reached a mean return ≥ 475 within
    200,000 steps"``); ``measured`` is shown only when the claim fails.

    >>> claim("2 + 2 ≥ 3", 2 + 2 >= 3, measured="4")
    ✓ 2 + 2 ≥ 3
    >>> claim("1 ≥ 3", 1 >= 3, measured="1")
    Traceback (most recent call last):
    ...
    AssertionError: ✗ 1 ≥ 3 (measured: 1)
    """
    if not holds:
        raise AssertionError(f"✗ {statement}" + (f" (measured: {measured})" if measured else ""))
    print(f"✓ {statement}")
