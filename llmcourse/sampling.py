"""Sampling responses from the policy: token ids, masks and texts in one batch.

Chapters 07–10 all start the same way: take some prompts, let the model answer each of them
``n_samples`` times, and keep the result in a form the losses can use. `sample_responses`
does that with the KV cache and returns a `Responses`: every row is ``prompt + response``,
the response ends with ``<|endoftext|>`` when the model produced it, and the rows are
right-padded with ``<|pad|>``::

    ids            <|user|> What … <|assistant|>  <think> … </answer> <|endoftext|>  <|pad|> <|pad|>
    response_mask     0      0  0       0            1    1     1          1            0       0

Rows are *prompt-major*: prompt 0's ``n_samples`` answers first, then prompt 1's, and so on,
so the rewards of one prompt's group are ``rewards.view(n_prompts, n_samples)[i]``.

`pack_responses` builds the same `Responses` from token lists made by hand (or by another
sampler), which is how the tests check the masks and how chapter 08 packs preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch

from llmcourse import taskworld as tw
from llmcourse.kv_cache import generate
from llmcourse.model import GPT
from llmcourse.tokenizer import decode, encode, special_id

T_item = TypeVar("T_item")


@dataclass
class Responses:
    """A batch of B = n_prompts · n_samples sampled responses, prompt-major."""

    ids: torch.Tensor
    """(B, T) long: prompt + response (with its EOS when produced), right-padded with ``<|pad|>``."""
    prompt_lens: torch.Tensor
    """(B,) long: number of prompt tokens of each row; the response starts at this index."""
    response_mask: torch.Tensor
    """(B, T) bool: True exactly on the response tokens, the EOS included; False on prompt and padding."""
    texts: list[str]
    """The B responses decoded, up to (not including) the EOS."""
    finished: torch.Tensor
    """(B,) bool: the response ended with EOS (False: it was cut at the token budget)."""
    n_samples: int = 1
    """Responses per prompt: rows ``i * n_samples … (i + 1) * n_samples - 1`` answer prompt i."""

    def __len__(self) -> int:
        return self.ids.size(0)

    @property
    def response_lens(self) -> torch.Tensor:
        """(B,) long: number of response tokens of each row, the EOS included."""
        return self.response_mask.sum(dim=1)

    @property
    def prompt_index(self) -> torch.Tensor:
        """(B,) long: which prompt each row answers, e.g. ``[0, 0, 1, 1]`` for 2 prompts × 2 samples."""
        return torch.arange(len(self), device=self.ids.device) // self.n_samples

    def per_row(self, items: Sequence[T_item]) -> list[T_item]:
        """One item per prompt -> one per row (each repeated ``n_samples`` times), e.g. the problems."""
        if len(items) * self.n_samples != len(self):
            raise ValueError(f"{len(items)} items for {len(self)} rows of {self.n_samples} samples each")
        return [items[i] for i in self.prompt_index.tolist()]


def prompt_ids(problems: Sequence[tw.Problem]) -> list[list[int]]:
    """The chat prompt of each problem as token ids (``<|user|>What is 2+3?<|assistant|>``)."""
    return [encode(tw.prompt(p)) for p in problems]


def pack_responses(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                   n_samples: int = 1, device: torch.device | str | None = None) -> Responses:
    """Pack row-aligned prompt and response token lists into a `Responses`.

    Each response is cut after its first EOS (tokens after it are dropped); a response that
    has no EOS is kept whole and marked unfinished.

    Token ids 49, 50, 51, … are the digits "1", "2", "3", …; 352 is EOS and 353 is ``<|pad|>``:

    >>> r = pack_responses([[1, 2], [3]], [[49, 50, 352, 7], [51, 52, 53]])
    >>> r.ids.tolist()
    [[1, 2, 49, 50, 352], [3, 51, 52, 53, 353]]
    >>> r.response_mask.int().tolist()
    [[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]]
    >>> r.texts, r.finished.tolist(), r.response_lens.tolist()
    (['12', '345'], [True, False], [3, 3])
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos, pad = special_id(tw.EOS), special_id(tw.PAD)
    cut = [list(r[:list(r).index(eos) + 1]) if eos in r else list(r) for r in responses]
    B, T = len(prompts), max((len(p) + len(r) for p, r in zip(prompts, cut)), default=0)
    ids = torch.full((B, T), pad, dtype=torch.long)                    # (B, T)
    response_mask = torch.zeros(B, T, dtype=torch.bool)                # (B, T)
    for i, (p, r) in enumerate(zip(prompts, cut)):
        ids[i, :len(p) + len(r)] = torch.tensor(list(p) + r, dtype=torch.long)
        response_mask[i, len(p):len(p) + len(r)] = True
    finished = torch.tensor([len(r) > 0 and r[-1] == eos for r in cut], dtype=torch.bool)   # (B,)
    texts = [decode(r[:-1] if f else r) for r, f in zip(cut, finished.tolist())]
    prompt_lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)                  # (B,)
    return Responses(ids=ids.to(device), prompt_lens=prompt_lens.to(device),
                     response_mask=response_mask.to(device), texts=texts,
                     finished=finished.to(device), n_samples=n_samples)


@torch.no_grad()
def sample_responses(model: GPT, prompts: Sequence[Sequence[int]] | Sequence[tw.Problem], n_samples: int = 1,
                     max_new_tokens: int = 48, temperature: float = 1.0,
                     generator: torch.Generator | None = None, batch_size: int = 256) -> Responses:
    """Answer every prompt ``n_samples`` times; rows prompt-major, cut at EOS, right-padded.

    prompts: token-id lists, or task-world `Problem`s (encoded with `prompt_ids`).
    temperature: 0 is greedy (then the ``n_samples`` answers of a prompt are equal).
    max_new_tokens: the token budget; it is lowered for a prompt so that prompt + response fit
    in the model's context (``block_size``), so every row can be scored by one forward pass.
    batch_size: most rows per `generate` call. ``generate`` needs equal prompt lengths, so rows
    are grouped by prompt length (shortest first, then in input order) and each group is cut
    into batches; the output keeps the input order.

    Batched equals one at a time. Greedy (``temperature=0``): every row is exactly what the
    model answers to that prompt alone, token by token without a cache. Sampling
    (``temperature > 0``): at each step, the rows of a batch draw their next token from
    ``generator`` one after another, in row order (finished rows keep drawing until the whole
    batch has ended). So with the same generator state, each row is exactly what a plain loop
    gives that runs every row alone, without a cache, and draws in that same order; with
    ``batch_size=1`` that is one prompt after the other. A different batching hands a row
    different random numbers, not a different distribution.
    """
    if prompts and isinstance(prompts[0], tw.Problem):
        prompts = prompt_ids(prompts)
    device = next(model.parameters()).device
    eos, block_size = special_id(tw.EOS), model.cfg.block_size
    rows = [list(p) for p in prompts for _ in range(n_samples)]       # prompt-major
    answers: list[list[int]] = [[] for _ in rows]
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_len.setdefault(len(row), []).append(i)
    for n, group in sorted(by_len.items()):
        new = min(max_new_tokens, block_size - n)
        if new < 1:
            raise ValueError(f"a prompt of {n} tokens leaves no room in the context of {block_size}")
        for lo in range(0, len(group), batch_size):
            chunk = group[lo:lo + batch_size]
            idx = torch.tensor([rows[i] for i in chunk], dtype=torch.long, device=device)   # (b, n)
            out = generate(model, idx, new, cache="prealloc", temperature=temperature,
                           generator=generator, stop_id=eos)                                # (b, n + new')
            for i, answer in zip(chunk, out[:, n:].tolist()):
                answers[i] = answer                                    # cut at EOS by pack_responses
    return pack_responses(rows, answers, n_samples=n_samples, device=device)
