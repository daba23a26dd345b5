"""KV caches and autoregressive generation with and without them.

Without a cache, each new token re-runs the model over the whole context: step t costs
O(t) tokens of compute, so generating n tokens costs O(n²). A KV cache stores every layer's
keys and values; each step then feeds only the newest token (O(1) tokens of MLP work, plus
attention over the cached keys).

Two interchangeable caches share one API (``current_pos``, ``reset``, ``update``, ``advance``):

* `ConcatKVCache` grows by ``torch.cat`` (simple; reallocates every step);
* `PreallocKVCache` writes into buffers of the full context length allocated once.

`generate` runs the same greedy / sampled loop with ``cache="none" | "concat" | "prealloc"``;
the tests assert the three produce identical tokens.

Sliding window. The model has ``block_size`` learned positions. When the sequence outgrows
them, the context is slid forward by ``shift`` tokens (default half the context). With absolute
positions, every cached key depends on its position, so after a slide the cache is reset and
refilled from the window (one prefill every ``shift`` tokens, not every token). The uncached
loop uses the very same window, so all variants stay token-for-token identical.
"""

from __future__ import annotations

import time

import torch

from llmcourse.model import GPT, attention


class ConcatKVCache:
    """Per layer, keys and values (B, nh, T_past, hs) grown with ``torch.cat``."""

    def __init__(self, n_layer: int):
        self.n_layer = n_layer
        self.reset()

    def reset(self) -> None:
        """Forget everything (call between prompts)."""
        self.k: list[torch.Tensor | None] = [None] * self.n_layer
        self.v: list[torch.Tensor | None] = [None] * self.n_layer
        self.current_pos = 0
        """Number of positions already stored: the position of the next token."""

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new k, v (B, nh, T, hs) of ``layer``; return all of them (B, nh, past + T, hs)."""
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)                   # NEW: past keys first, then the new ones
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, T: int) -> None:
        """Called by the model once all layers have stored T new positions."""
        self.current_pos += T

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)


class PreallocKVCache:
    """Keys and values in buffers (n_layer, B, nh, max_len, hs), allocated once, filled in place."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_size: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.current_pos = 0

    def reset(self) -> None:
        """Forget everything: only the position moves back; the buffers are simply overwritten."""
        self.current_pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new k, v (B, nh, T, hs) at [current_pos, current_pos + T); return views of the filled part."""
        start, end = self.current_pos, self.current_pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"cache full: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]    # (B, nh, end, hs), no copy

    def advance(self, T: int) -> None:
        self.current_pos += T

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


def make_cache(kind: str, model: GPT, batch: int):
    """``"none"`` -> None, ``"concat"`` -> `ConcatKVCache`, ``"prealloc"`` -> `PreallocKVCache`."""
    cfg = model.cfg
    if kind == "none":
        return None
    if kind == "concat":
        return ConcatKVCache(cfg.n_layer)
    if kind == "prealloc":
        p = next(model.parameters())
        return PreallocKVCache(cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                               device=p.device, dtype=p.dtype)
    raise ValueError(f"unknown cache kind {kind!r}; use 'none', 'concat' or 'prealloc'")


def window_start(length: int, start: int, block_size: int, shift: int) -> int:
    """First token of the context window for a sequence of ``length`` tokens.

    The window ``[start, length)`` slides forward by ``shift`` until it fits in ``block_size``:
    ``window_start(65, 0, 64, 32) -> 32``; ``window_start(64, 0, 64, 32) -> 0``.
    """
    while length - start > block_size:
        start += shift
    return start


def pick_next(logits: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, 1) next ids: argmax when ``temperature == 0``, else a sample."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, cache: str = "prealloc",
             temperature: float = 0.0, generator: torch.Generator | None = None,
             stop_id: int | None = None, shift: int | None = None) -> torch.Tensor:
    """Continue ``idx`` (B, T) by ``max_new_tokens`` tokens -> (B, T + new).

    cache: ``"none"`` recomputes the whole window each step; ``"concat"`` / ``"prealloc"``
    feed one token per step. stop_id: stop early once every row has produced it (rows that
    stopped keep getting tokens; cut them at ``stop_id``). shift: how far the window slides
    when the context is full (default ``block_size // 2``).
    """
    bs = model.cfg.block_size
    shift = shift or bs // 2
    kv = make_cache(cache, model, idx.size(0))
    start = window_start(idx.size(1), 0, bs, shift)
    logits = model(idx[:, start:], kv)[:, -1]                          # prefill: (B, V)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for step in range(max_new_tokens):
        nxt = pick_next(logits, temperature, generator)                # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
        if stop_id is not None:
            done |= nxt[:, 0] == stop_id
            if bool(done.all()):
                break
        if step == max_new_tokens - 1:
            break
        new_start = window_start(idx.size(1), start, bs, shift)
        if kv is None:
            logits = model(idx[:, new_start:])[:, -1]                  # recompute the whole window
        elif new_start != start:
            kv.reset()                                                 # window slid: refill the cache
            logits = model(idx[:, new_start:], kv)[:, -1]
        else:
            logits = model(nxt, kv)[:, -1]                             # only the new token
        start = new_start
    return idx


# --------------------------------------------------------------------------- the pieces, one at a time (chapter 04)


def attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One attention call with a cache: append the new keys/values, attend over all of them.

    q, k, v: (B, nh, T, hs) for T new tokens; past_k, past_v: (B, nh, P, hs), P >= 0.
    Returns out (B, nh, T, hs) and the grown cache k_all, v_all (B, nh, P + T, hs).
    New query i sits at position P + i and sees keys 0 … P + i.
    """
    k_all = torch.cat([past_k, k], dim=2)                              # (B, nh, P + T, hs)
    v_all = torch.cat([past_v, v], dim=2)
    return attention(q, k_all, v_all, causal=True), k_all, v_all


@torch.no_grad()
def generate_greedy_cached(model: GPT, idx: torch.Tensor, max_new_tokens: int, cache) -> torch.Tensor:
    """Greedy generation with a KV cache, within the context length: (B, T) -> (B, T + new).

    Reset the cache, prefill with the prompt, then feed one token per step.
    """
    cache.reset()                                                      # no keys from a previous prompt
    logits = model(idx, cache)                                         # (B, T, V): prefill
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)               # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
        if idx.size(1) < model.cfg.block_size:
            logits = model(nxt, cache)                                 # (B, 1, V): only the new token
    return idx


@torch.no_grad()
def step_times(model: GPT, idx: torch.Tensor, max_new_tokens: int, cache: str) -> list[float]:
    """Wall seconds of each generation step (greedy, within the context): for the time-per-token plot."""
    kv = make_cache(cache, model, idx.size(0))
    times = []
    logits = model(idx, kv)[:, -1]
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        nxt = logits.argmax(dim=-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        logits = (model(idx) if kv is None else model(nxt, kv))[:, -1]
        times.append(time.perf_counter() - start)
    return times
