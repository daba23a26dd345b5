"""Chapter 04 exercises: attention, heads, and the KV cache."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import kv_cache, model
from llmcourse.tooling.checker import Exercise, KnownWrong, Observed, register, tiny_gpt
from llmcourse.kv_cache import ConcatKVCache, PreallocKVCache
from llmcourse.model import GPT


def _randn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, 1.0, shape).astype(np.float32))


# --------------------------------------------------------------------------- 4.1 causal attention


def _attention_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for B, nh, T, hs in [(1, 1, 3, 4), (2, 2, 5, 8), (1, 3, 4, 16)]:
        cases.append(dict(q=_randn(rng, B, nh, T, hs), k=_randn(rng, B, nh, T, hs), v=_randn(rng, B, nh, T, hs)))
    return cases


def _att_wrong_side(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    T = q.size(-2)
    future_and_self = torch.ones(T, T, dtype=torch.bool).triu()        # keeps j >= i: the future
    return F.softmax(scores.masked_fill(~future_and_self, float("-inf")), dim=-1) @ v


def _att_masks_self(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    T = q.size(-2)
    mask = torch.ones(T, T, dtype=torch.bool).triu()                   # forgot diagonal=1: hides j == i too
    return F.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


def _att_no_scale(q, k, v):
    return model.attention(q * math.sqrt(q.size(-1)), k, v)            # = softmax(q kᵀ + mask) v


def _att_softmax_dim(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    T = q.size(-2)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return F.softmax(scores, dim=-2) @ v


def _att_scale_by_d(q, k, v):
    return model.attention(q / math.sqrt(q.size(-1)), k, v)            # = scores / d, not / √d


def _att_no_mask(q, k, v):
    return model.attention(q, k, v, causal=False)


# --------------------------------------------------------------------------- 4.2 split heads


def _split_cases(rng: np.random.Generator) -> list[dict]:
    return [dict(x=_randn(rng, B, T, nh * hs), n_head=nh) for B, T, nh, hs in [(1, 2, 2, 3), (2, 3, 4, 2), (1, 5, 3, 4)]]


def _split_no_transpose(x, n_head):
    B, T, C = x.shape
    return x.view(B, n_head, T, C // n_head)


def _split_interleaved(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)      # head h gets channels h, h+nh, …


def _split_forgot_transpose(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head)


# --------------------------------------------------------------------------- 4.3 attention step with a cache


def _step_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for B, nh, P, T, hs in [(1, 1, 3, 1, 4), (1, 2, 0, 3, 4), (2, 2, 4, 3, 8), (1, 2, 5, 2, 4)]:
        cases.append(dict(q=_randn(rng, B, nh, T, hs), k=_randn(rng, B, nh, T, hs), v=_randn(rng, B, nh, T, hs),
                          past_k=_randn(rng, B, nh, P, hs), past_v=_randn(rng, B, nh, P, hs)))
    return cases


def _step_new_first(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([k, past_k], dim=2), torch.cat([v, past_v], dim=2)
    return model.attention(q, k_all, v_all), k_all, v_all


def _step_ignores_cache(q, k, v, past_k, past_v):
    out = model.attention(q, k, v)
    return out, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)


def _step_mask_not_offset(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.ones(q.size(-2), k_all.size(-2), dtype=torch.bool).tril()  # diagonal not shifted by P
    return F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v_all, k_all, v_all


def _step_no_mask(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    return model.attention(q, k_all, v_all, causal=False), k_all, v_all


# --------------------------------------------------------------------------- 4.4 positions under the cache


def _position_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(current_pos=0, T=4), dict(current_pos=5, T=1), dict(current_pos=3, T=3)]
    cases += [dict(current_pos=int(rng.integers(1, 40)), T=int(rng.integers(1, 6))) for _ in range(3)]
    return cases


def _pos_reference(current_pos: int, T: int) -> torch.Tensor:
    return model.position_ids(current_pos, T)


def _pos_from_zero(current_pos, T):
    return torch.arange(T)


def _pos_off_by_one(current_pos, T):
    return torch.arange(current_pos + 1, current_pos + T + 1)


def _pos_all(current_pos, T):
    return torch.arange(current_pos + T)


def _pos_float(current_pos, T):
    return torch.arange(current_pos, current_pos + T, dtype=torch.float32)


# --------------------------------------------------------------------------- 4.5 cached generation loop


def _gen_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for B, kind in [(1, "concat"), (2, "prealloc"), (1, "prealloc")]:
        T1, T2 = int(rng.integers(3, 8)), int(rng.integers(3, 8))
        cases.append(dict(prompts=[torch.from_numpy(rng.integers(0, 50, (B, T1))),
                                   torch.from_numpy(rng.integers(0, 50, (B, T2)))],
                          max_new_tokens=int(rng.integers(5, 10)), cache=kind))
    return cases


class _CountingModel(torch.nn.Module):
    """The model, counting the token positions it is fed (a cached loop feeds each token once)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model, self.cfg, self.tokens_fed = model, model.cfg, 0

    def forward(self, idx, cache=None):
        self.tokens_fed += idx.numel()
        return self.model(idx, cache)


def _run_generation(fn, case: dict) -> Observed:
    """Generate for two prompts in a row with the same cache object (so a missing reset shows),
    counting the tokens fed to the model (so a loop that ignores the cache shows)."""
    m = _CountingModel(tiny_gpt())
    cfg = m.cfg
    B = case["prompts"][0].size(0)
    cache = ConcatKVCache(cfg.n_layer) if case["cache"] == "concat" else \
        PreallocKVCache(cfg.n_layer, B, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    out = [fn(model=m, idx=p, max_new_tokens=case["max_new_tokens"], cache=cache) for p in case["prompts"]]
    return Observed(out, {"the number of tokens fed to the model": m.tokens_fed})


@torch.no_grad()
def _gen_no_reset(model, idx, max_new_tokens, cache):
    logits = model(idx, cache)
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        logits = model(nxt, cache)
    return idx


@torch.no_grad()
def _gen_first_position(model, idx, max_new_tokens, cache):
    cache.reset()
    logits = model(idx, cache)
    for _ in range(max_new_tokens):
        nxt = logits[:, 0].argmax(-1, keepdim=True)                    # the prediction after the *first* token
        idx = torch.cat([idx, nxt], dim=1)
        logits = model(nxt, cache)
    return idx


@torch.no_grad()
def _gen_step_without_cache(model, idx, max_new_tokens, cache):
    cache.reset()
    logits = model(idx, cache)
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        logits = model(nxt)                                            # sees one token, at position 0
    return idx


@torch.no_grad()
def _gen_never_uses_the_cache(model, idx, max_new_tokens, cache):
    for _ in range(max_new_tokens):
        logits = model(idx)                                            # the whole sequence again, every step
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


@torch.no_grad()
def _gen_only_new(model, idx, max_new_tokens, cache):
    T = idx.size(1)
    return kv_cache.generate_greedy_cached(model, idx, max_new_tokens, cache)[:, T:]


register(
    Exercise(
        id="4.1", title="Causal scaled dot-product attention", reference=model.attention, cases=_attention_cases,
        hint="Compute scores = q @ kᵀ / √hs (shape (B, nh, T, T)), set the scores of future keys (j > i) to -inf, "
             "softmax over the last dimension (the keys), then multiply by v.",
        known_wrong=[
            KnownWrong("mask on the wrong side", _att_wrong_side,
                       "Your mask hides the past and shows the future. Query i may see keys j <= i: keep the lower "
                       "triangle (torch.tril) and set the entries *above* the diagonal to -inf."),
            KnownWrong("mask hides the token itself", _att_masks_self,
                       "Your mask also hides the diagonal, so a token cannot attend to itself and the first query "
                       "has no key left (a softmax over all -inf gives NaN). Mask only j > i: "
                       "torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)."),
            KnownWrong("missing sqrt(d) scaling", _att_no_scale,
                       "The scores are not scaled. Divide q @ kᵀ by √hs (hs = q.size(-1)), so that the softmax "
                       "does not saturate as the head size grows."),
            KnownWrong("softmax over the wrong dim", _att_softmax_dim,
                       "Your softmax normalises over the queries (dim=-2). Each query's weights over the keys must "
                       "sum to 1: use softmax(..., dim=-1)."),
            KnownWrong("scaled by d, not sqrt(d)", _att_scale_by_d,
                       "You divided by hs; the scaling is by √hs (math.sqrt(hs)), which keeps the scores' "
                       "variance near 1 for unit-variance q and k."),
            KnownWrong("no causal mask", _att_no_mask,
                       "Every query sees every key, including future ones. Mask the scores above the diagonal "
                       "with -inf before the softmax."),
        ],
        atol=1e-5),
    Exercise(
        id="4.2", title="Split the channels into heads", reference=model.split_heads, cases=_split_cases,
        hint="view (B, T, C) as (B, T, nh, hs), then transpose dims 1 and 2 to get (B, nh, T, hs).",
        known_wrong=[
            KnownWrong("view without transpose", _split_no_transpose,
                       "x.view(B, nh, T, hs) has the right shape but mixes tokens: memory is laid out token by "
                       "token. First view as (B, T, nh, hs), then .transpose(1, 2)."),
            KnownWrong("interleaved heads", _split_interleaved,
                       "Head h must get the contiguous channels h*hs … (h+1)*hs - 1, not every nh-th channel: "
                       "view as (B, T, nh, hs) (heads before head size)."),
            KnownWrong("forgot the transpose", _split_forgot_transpose,
                       "The result is (B, T, nh, hs); attention needs the heads as a batch dimension: "
                       ".transpose(1, 2) gives (B, nh, T, hs)."),
        ]),
    Exercise(
        id="4.3", title="An attention step that appends to the cache", reference=kv_cache.attention_step,
        cases=_step_cases,
        hint="k_all = cat([past_k, k], dim=2) (same for v); the new queries are the last T of P + T positions, so "
             "query i may see keys j <= P + i: causal_mask(T, P + T) or torch.tril(..., diagonal=P).",
        known_wrong=[
            KnownWrong("new keys before the past", _step_new_first,
                       "The cache must keep positions in order: past first, then the new tokens "
                       "(torch.cat([past_k, k], dim=2))."),
            KnownWrong("attends only to the new tokens", _step_ignores_cache,
                       "Your queries attend only to the new keys. The point of the cache is to attend to all "
                       "P + T keys: use k_all and v_all in the attention."),
            KnownWrong("mask not offset by the past", _step_mask_not_offset,
                       "Your mask's diagonal starts at key 0, so the new queries see only the oldest keys. Query i "
                       "sits at position P + i: use torch.tril(ones(T, P + T), diagonal=P)."),
            KnownWrong("no mask", _step_no_mask,
                       "Right for one new token, wrong when several arrive at once (a prefill): new query i must "
                       "not see the new tokens after it. Keep the causal mask, offset by P."),
        ],
        atol=1e-5),
    Exercise(
        id="4.4", title="Positions under the cache", reference=_pos_reference, cases=_position_cases,
        hint="The T new tokens come right after the current_pos cached ones: torch.arange(current_pos, "
             "current_pos + T), dtype long.",
        known_wrong=[
            KnownWrong("positions restart at 0", _pos_from_zero,
                       "With a cache you feed only the new tokens, but they are not at positions 0 … T-1: "
                       "start at current_pos (the number of tokens already cached)."),
            KnownWrong("off by one", _pos_off_by_one,
                       "Positions count from 0: with current_pos tokens cached (positions 0 … current_pos-1), "
                       "the next token is at position current_pos, not current_pos + 1."),
            KnownWrong("all positions", _pos_all,
                       "You returned the positions of the whole sequence; return only the T new ones."),
            KnownWrong("float positions", _pos_float,
                       "Positions index an embedding table, so they must be integers (dtype torch.long)."),
        ]),
    Exercise(
        id="4.5", title="Greedy generation with a KV cache", reference=kv_cache.generate_greedy_cached,
        cases=_gen_cases, call=_run_generation, trace_at_most=("the number of tokens fed to the model",),
        trace_help={"the number of tokens fed to the model":
                    "a cached loop feeds the prompt once, then only the newest token at each step; feeding the "
                    "whole sequence again every step gives the same tokens but none of the speed"},
        hint="cache.reset(); logits = model(idx, cache); then repeat: next = argmax of logits[:, -1], append it "
             "to idx, logits = model(next, cache). Return the whole sequence (prompt + new tokens).",
        known_wrong=[
            KnownWrong("no reset between prompts", _gen_no_reset,
                       "Your first prompt is right and the second is wrong: the cache still holds the first "
                       "prompt's keys and position. Call cache.reset() at the start."),
            KnownWrong("prediction of the first position", _gen_first_position,
                       "After the prefill, logits has one row per prompt token; the next token is predicted by "
                       "the *last* one: logits[:, -1]."),
            KnownWrong("step without the cache", _gen_step_without_cache,
                       "In the loop you call model(next) without the cache, so the model sees a single token at "
                       "position 0 and no past. Pass the cache: model(next, cache)."),
            KnownWrong("never uses the cache", _gen_never_uses_the_cache,
                       "Your tokens are right, but the loop feeds the whole sequence to the model at every step "
                       "(model(idx)) and never passes the cache: that is uncached generation, which recomputes every "
                       "earlier token at every step. "
                       "Prefill once with model(idx, cache), then feed only the newest token: model(next, cache)."),
            KnownWrong("returns only the new tokens", _gen_only_new,
                       "Return the prompt followed by the new tokens, shape (B, T + max_new_tokens)."),
        ]),
)
