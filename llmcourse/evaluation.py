"""Evaluating a model on the task world: responses to problems and what the rules say of them."""

from __future__ import annotations

from typing import Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.kv_cache import generate
from llmcourse.model import GPT
from llmcourse.tokenizer import decode, encode, special_id


@torch.no_grad()
def complete(model: GPT, problems: Sequence[tw.Problem], max_new_tokens: int = 48,
             temperature: float = 0.0, generator: torch.Generator | None = None,
             batch_size: int = 128) -> list[str]:
    """The model's response text (up to EOS) for each problem, batched by prompt length."""
    device = next(model.parameters()).device
    eos = special_id(tw.EOS)
    prompts = [encode(tw.prompt(p)) for p in problems]
    out: list[str] = [""] * len(problems)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_len.setdefault(len(ids), []).append(i)
    for n, rows in sorted(by_len.items()):
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            idx = torch.tensor([prompts[i] for i in chunk], device=device)
            new = min(max_new_tokens, model.cfg.block_size - n)
            gen = generate(model, idx, new, cache="prealloc", temperature=temperature,
                           generator=generator, stop_id=eos)[:, n:]
            for i, row in zip(chunk, gen.tolist()):
                if eos in row:
                    row = row[:row.index(eos)]
                out[i] = decode(row)
    return out


def evaluate(model: GPT, problems: Sequence[tw.Problem] | None = None) -> dict:
    """Greedy answers on the held-out set: exact accuracy, format rate and the responses."""
    problems = list(tw.eval_problems() if problems is None else problems)
    responses = complete(model, problems)
    correct = [tw.is_correct(r, p) for r, p in zip(responses, problems)]
    formatted = [tw.format_ok(r) for r in responses]
    return {"accuracy": sum(correct) / len(problems), "format_rate": sum(formatted) / len(problems),
            "correct": correct, "responses": responses}
