"""Training throughput of the tiny GPT (tokens/s, forward + backward + AdamW step).

The course GPT (4 layers, 128 wide), batch 32 x 64 tokens, the base model's pretraining step,
on one and on two CPU threads.
"""

from __future__ import annotations

import time

import torch

from llmcourse.model import GPT, GPTConfig
from llmcourse.runtime import torch_threads
from llmcourse.pretraining import TrainConfig, configure_optimizer, next_token_loss


def tokens_per_second(threads: int, steps: int = 15, batch_size: int = 32) -> float:
    with torch_threads(threads):
        torch.manual_seed(0)
        cfg = GPTConfig()
        model = GPT(cfg)
        opt = configure_optimizer(model, TrainConfig())
        x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size))

        def step():
            loss = next_token_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for _ in range(3):
            step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * x.numel() / (time.perf_counter() - start)


def run() -> list[str]:
    n = GPT(GPTConfig()).n_params()
    lines = [f"model: {n / 1e6:.2f} M parameters, batch 32 x 64 tokens"]
    for threads in (1, 2):
        lines.append(f"{threads} thread(s): {tokens_per_second(threads):,.0f} tokens/s")
    return lines
