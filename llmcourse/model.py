"""A tiny GPT (nanoGPT style): token + position embeddings, pre-norm transformer blocks.

Shapes: B batch, T tokens, C = n_embd channels, nh heads, hs = C / nh head size, V vocab.
The attention layers accept an optional KV cache (`llmcourse.kv_cache`): then ``idx`` holds
only the *new* tokens, their positions start at ``cache.current_pos``, and their keys and
values are appended to the cache, so the past is never recomputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """Shape of the tiny GPT."""

    vocab_size: int = 360
    """Number of token ids (the course tokenizer's ``n_vocab``)."""
    block_size: int = 64
    """Context length: the most positions the model has embeddings for."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """Width of the residual stream (must be a multiple of ``n_head``)."""
    use_sdpa: bool = True
    """Use torch's fused ``scaled_dot_product_attention``; False uses the explicit `attention`."""

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- attention, readable


def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(t_q, t_k) bool, True where query i may attend to key j.

    The queries are the *last* t_q of the t_k positions (the first t_k - t_q are cached past),
    so query i sits at position ``i + t_k - t_q`` and sees keys ``j <= i + t_k - t_q``::

        causal_mask(2, 3) -> [[True, True, False],
                              [True, True, True ]]
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Scaled dot-product attention, written out: softmax(q kᵀ / √hs + mask) v.

    q: (B, nh, T_q, hs); k, v: (B, nh, T_k, hs) with T_k >= T_q -> (B, nh, T_q, hs).
    """
    hs = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)                  # (B, nh, T_q, T_k)
    if causal:
        mask = causal_mask(q.size(-2), k.size(-2), q.device)           # (T_q, T_k)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)                                # each row sums to 1 over keys
    return weights @ v                                                 # (B, nh, T_q, hs)


def fast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Same as ``attention(q, k, v, causal=True)`` with torch's fused kernel."""
    t_q, t_k = q.size(-2), k.size(-2)
    if t_q == 1:        # one new query sees every key: no mask needed
        return F.scaled_dot_product_attention(q, k, v)
    if t_q == t_k:      # no cached past: the ordinary causal mask
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t_q, t_k, q.device))


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs): channels [h*hs, (h+1)*hs) become head h."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)          # (B, nh, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C): the inverse of `split_heads`."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)          # (B, T, C)


# --------------------------------------------------------------------------- modules


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)           # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head, self.layer_idx, self.use_sdpa = cfg.n_head, layer_idx, cfg.use_sdpa

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        C = x.size(-1)
        q, k, v = self.c_attn(x).split(C, dim=2)                       # each (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))     # each (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                  # (B, nh, past + T, hs)
        y = fast_attention(q, k, v) if self.use_sdpa else attention(q, k, v)
        return self.c_proj(merge_heads(y))                             # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


def position_ids(current_pos: int, T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Positions of T new tokens when ``current_pos`` tokens are already cached: (T,) long.

    ``position_ids(5, 3) -> tensor([5, 6, 7])``; without a cache, ``current_pos = 0``.
    """
    return torch.arange(current_pos, current_pos + T, dtype=torch.long, device=device)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)            # token embeddings
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)            # learned position embeddings
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                          # weight tying (GPT-2)
        self.apply(self._init)
        for name, p in self.named_parameters():                        # GPT-2: scale residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def n_params(self) -> int:
        """Number of parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """idx: (B, T) token ids -> logits (B, T, V).

        With a ``cache``, ``idx`` holds only the new tokens; the cache supplies the past keys
        and values and its ``current_pos`` is advanced by T.
        """
        B, T = idx.shape
        past = cache.current_pos if cache is not None else 0
        if past + T > self.cfg.block_size:
            raise ValueError(f"{past + T} positions exceed the context length {self.cfg.block_size}")
        pos = position_ids(past, T, idx.device)                        # (T,)
        x = self.wte(idx) + self.wpe(pos)                              # (B, T, C)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.advance(T)
        return self.lm_head(self.ln_f(x))                              # (B, T, V)


@torch.no_grad()
def attention_maps(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence: idx (1, T) -> (n_layer, nh, T, T).

    Runs the model block by block and recomputes each layer's softmax(q kᵀ / √hs + mask) explicitly.
    """
    T = idx.size(1)
    x = model.wte(idx) + model.wpe(position_ids(0, T, idx.device))
    maps = []
    for block in model.blocks:
        h = block.ln_1(x)
        q, k, _ = block.attn.c_attn(h).split(h.size(-1), dim=2)
        q, k = split_heads(q, block.attn.n_head), split_heads(k, block.attn.n_head)   # (1, nh, T, hs)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~causal_mask(T, T, idx.device), float("-inf"))
        maps.append(F.softmax(scores, dim=-1)[0])                                     # (nh, T, T)
        x = block(x)
    return torch.stack(maps)
