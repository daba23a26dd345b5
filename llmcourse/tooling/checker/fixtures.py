"""Shared fixtures of model-based checks (not one chapter's: every exercise module may use them)."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def tiny_gpt():
    """A small random GPT (vocabulary 50, context 48, 2 layers, width 32) with large weights, so
    that greedy outputs depend on the whole context: the model that model-based checks run on."""
    from llmcourse.model import GPT, GPTConfig

    g = torch.Generator().manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("w"):                                   # embeddings: std 1
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() > 1:                                          # matrices: std 0.3; biases, norms kept
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()
