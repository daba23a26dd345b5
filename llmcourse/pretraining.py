"""Pretraining: the next-token loss, data loading, warmup + cosine schedule, gradient clipping.

A training step (nanoGPT's loop, in stages)::

    lr = lr_at(step, ...)                      # Stage 1: schedule
    loss = loss_fn(model, batch)               # Stage 2: forward, next-token loss
    loss.backward()                            # Stage 3: gradients
    norm = clip_grad_norm(params, max_norm)    # Stage 4: clip the global gradient norm
    optimizer.step()                           # Stage 5: update
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.model import GPT
from llmcourse.tokenizer import encode


@dataclass
class TrainConfig:
    """Hyperparameters of one training run."""

    steps: int = 200
    """Number of optimizer steps."""
    batch_size: int = 32
    """Sequences per step."""
    max_lr: float = 3e-3
    """Peak learning rate, reached at the end of warmup."""
    min_lr: float = 3e-4
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 20
    """Steps of linear warmup from max_lr / warmup_steps to max_lr."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (on matrices only, not on biases, norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this value (0 disables)."""
    seed: int = 0
    """Seed of the batches (the model's initialisation uses torch's global seed)."""


# --------------------------------------------------------------------------- the loss


def next_token_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``idx[:, t+1]`` from position t.

    logits: (B, T, V) from ``model(idx)``; idx: (B, T) -> scalar. The last position has no target.
    """
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1))


# --------------------------------------------------------------------------- data loading


def pretraining_stream(n_problems: int, seed: int, reasoned_share: float) -> torch.Tensor:
    """(N,) long: transcripts of ``n_problems`` training problems in mixed styles (`taskworld.draw_styles`), concatenated."""
    problems = tw.sample_problems(n_problems, seed)
    ids: list[int] = []
    for p, style in zip(problems, tw.draw_styles(n_problems, reasoned_share, seed)):
        ids += encode(tw.transcript(p, style))
    return torch.tensor(ids, dtype=torch.long)


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows from one long token stream (documents packed, separated by EOS).

    data: (N,) long -> x, y: (B, block_size), with y the window shifted by one token.
    """
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + block_size] for i in ix.tolist()])          # (B, T)
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix.tolist()])  # (B, T)
    return x, y


# --------------------------------------------------------------------------- schedule and clipping


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup, then cosine decay from ``max_lr`` to ``min_lr``; ``min_lr`` after the end.

    Warmup: ``max_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (never 0).
    Decay: progress ``p = (step - warmup_steps) / (total_steps - warmup_steps)``, clipped to 1,
    and ``min_lr + 0.5 * (1 + cos(π p)) * (max_lr - min_lr)``.
    ``lr_at(0, 1.0, 0.1, 10, 110) -> 0.1``; ``lr_at(60, 1.0, 0.1, 10, 110) -> 0.55``.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    The norm is over *all* entries of *all* tensors: ``sqrt(sum_i ||g_i||²)``. The scale is
    ``min(1, max_norm / (norm + 1e-6))`` (as in ``torch.nn.utils.clip_grad_norm_``), so the
    direction is kept. Returns the clipped gradients (new tensors) and the norm *before* clipping.
    """
    total_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).to(grads[0].dtype)
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    return [g * scale for g in grads], total_norm


def configure_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights only (nanoGPT)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.max_lr, betas=(0.9, 0.95))


# --------------------------------------------------------------------------- the loop


def train(model: GPT, loss_fn: Callable[[GPT, int], torch.Tensor], cfg: TrainConfig,
          lr_fn: Callable[..., float] = lr_at,
          clip_fn: Callable[[list[torch.Tensor], float], tuple[list[torch.Tensor], torch.Tensor]] = clip_grad_norm,
          progress: bool = True, desc: str = "train") -> dict[str, list[float]]:
    """Run ``cfg.steps`` optimizer steps; ``loss_fn(model, step)`` draws a batch and returns its loss.

    Returns the history: ``loss``, ``lr``, ``grad_norm`` (before clipping) per step, ``tokens_per_s``.
    """
    opt = configure_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    history: dict[str, list[float]] = {"loss": [], "lr": [], "grad_norm": []}
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        # Stage 1: schedule
        lr = lr_fn(step=step, max_lr=cfg.max_lr, min_lr=cfg.min_lr,
                   warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        # Stage 2-3: loss and gradients
        loss = loss_fn(model, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Stage 4: clip the global gradient norm
        grads = [p.grad for p in params]
        clipped, norm = clip_fn(grads, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        for p, g in zip(params, clipped):
            p.grad = g
        # Stage 5: update
        opt.step()
        history["loss"].append(loss.item())
        history["lr"].append(lr)
        history["grad_norm"].append(float(norm))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    history["seconds"] = [time.perf_counter() - start]
    model.eval()
    return history
