"""KV-cache generation speed: no cache vs concat cache vs pre-allocated cache (tokens/s, ratios).

The model has the course GPT's shape (4 layers, 128 wide, 4 heads) with a 1280-token context,
so that 1024 new tokens fit without sliding; weights are random (speed does not depend on them).
One thread, batch 1, greedy, from a 16-token prompt; each variant's best of ``repeats`` runs.
"""

from __future__ import annotations

import time

import torch

from llmcourse.kv_cache import generate
from llmcourse.model import GPT, GPTConfig
from llmcourse.runtime import torch_threads

LENGTHS = (128, 512, 1024)
VARIANTS = ("none", "concat", "prealloc")


def time_generation(model: GPT, n_new: int, cache: str, repeats: int = 2) -> float:
    """Best wall seconds of generating ``n_new`` tokens from a 16-token prompt."""
    prompt = torch.randint(0, model.cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, prompt, n_new, cache=cache)
        best = min(best, time.perf_counter() - start)
    return best


def run() -> list[str]:
    with torch_threads(1):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=1280)).eval()
        generate(model, torch.zeros(1, 4, dtype=torch.long), 8, cache="prealloc")  # warm-up
        lines = [f"{'new tokens':>10} {'no cache':>10} {'concat':>10} {'prealloc':>10}   "
                 f"{'concat/none':>11} {'prealloc/none':>13} {'prealloc/concat':>15}   (tokens/s)"]
        for n in LENGTHS:
            tps = {v: n / time_generation(model, n, v, repeats=1 if (v == "none" and n > 512) else 2) for v in VARIANTS}
            lines.append(f"{n:>10} {tps['none']:>10.0f} {tps['concat']:>10.0f} {tps['prealloc']:>10.0f}   "
                         f"{tps['concat'] / tps['none']:>10.1f}x {tps['prealloc'] / tps['none']:>12.1f}x "
                         f"{tps['prealloc'] / tps['concat']:>14.2f}x")
        return lines
