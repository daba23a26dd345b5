"""Supervised fine-tuning (SFT) on chat-formatted examples (evaluation: `llmcourse.evaluation`).

An SFT example is ``prompt + response + EOS`` as token ids. Examples of different lengths are
right-padded with ``<|pad|>`` into one (B, T) batch. The model reads ``ids[:, :-1]`` and is
scored on predicting ``ids[:, 1:]``, but only where the *target* is a response token (the
EOS included): prompt tokens and padding get the label -100 and count for nothing::

    ids      <|user|> What is 2 + 3 ? <|assistant|> <think> … </answer> <|endoftext|> <|pad|>
    targets    -100   -100 … -100      <think>   …   <|endoftext|>       -100
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from llmcourse import taskworld as tw
from llmcourse.model import GPT
from llmcourse.pretraining import TrainConfig, train
from llmcourse.sampling import Responses
from llmcourse.tokenizer import encode, special_id

IGNORE = -100
"""Label of a position that does not count in the loss (PyTorch's ``ignore_index``)."""


def encode_example(p: tw.Problem, style: str = tw.REASONED) -> tuple[list[int], int]:
    """Token ids of ``prompt + response(style) + EOS`` and the number of prompt tokens."""
    prompt_ids = encode(tw.prompt(p))
    return prompt_ids + encode(tw.response(p, style) + tw.EOS), len(prompt_ids)


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad examples -> ids (B, T_max) long and prompt_lens (B,) long."""
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    for i, (row, _) in enumerate(examples):
        ids[i, :len(row)] = torch.tensor(row)
    return ids, torch.tensor([n for _, n in examples], dtype=torch.long)


def sft_targets(ids: torch.Tensor, prompt_lens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Labels for SFT: (B, T) ids -> (B, T-1) targets, -100 where the loss must not look.

    Position t predicts ``ids[:, t+1]``; keep it only if token t+1 is in the response
    (``t + 1 >= prompt_len``) and is not padding.
    """
    targets = ids[:, 1:].clone()                                           # (B, T-1): token t+1
    t_next = torch.arange(1, ids.size(1), device=ids.device)               # (T-1,): index of each target
    in_prompt = t_next[None, :] < prompt_lens[:, None]                     # (B, T-1)
    targets[in_prompt | (targets == pad_id)] = IGNORE
    return targets


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -100.

    logits: (B, T, V), targets: (B, T) long -> scalar. Every kept token weighs the same,
    whichever sequence it is in (the mean is over tokens, not over sequences).
    """
    logp = F.log_softmax(logits.float(), dim=-1)                           # (B, T, V)
    keep = targets != IGNORE                                               # (B, T)
    nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (nll * keep).sum() / keep.sum()


def sft_loss(model: GPT, ids: torch.Tensor, prompt_lens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The SFT loss of a padded batch: response tokens only."""
    logits = model(ids[:, :-1])                                            # (B, T-1, V)
    return masked_cross_entropy(logits, sft_targets(ids, prompt_lens, pad_id))


# --------------------------------------------------------------------------- data and the fine-tuning run


def example_sampler(examples: Sequence[tuple[list[int], int]], batch_size: int, seed: int):
    """``batch(step) -> (ids, prompt_lens)``: ``batch_size`` of ``examples`` ((ids, prompt_len) pairs) drawn with
    replacement from a generator seeded with ``seed``, right-padded."""
    pad = special_id(tw.PAD)
    gen = torch.Generator().manual_seed(seed)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        return collate([examples[i] for i in rows], pad)
    return batch


def sft_sampler(problems: Sequence[tw.Problem], batch_size: int, seed: int, reasoned_share: float):
    """``batch(step) -> (ids, prompt_lens)``: a seeded random batch of padded SFT examples in mixed styles.

    Each problem gets one style for good (`taskworld.draw_styles`); each call draws ``batch_size`` examples
    with replacement from a generator seeded with ``seed`` (`example_sampler`).
    """
    styles = tw.draw_styles(len(problems), reasoned_share, seed)
    return example_sampler([encode_example(p, s) for p, s in zip(problems, styles)], batch_size, seed)


def examples_from_responses(responses: Responses, rows: Sequence[int] | None = None) -> list[tuple[list[int], int]]:
    """SFT examples from sampled responses: (prompt + response ids, the EOS included when produced; prompt length)
    for each of ``rows`` (all rows by default). What a model wrote becomes what another one learns from
    (rejection sampling, distillation)."""
    ids, mask, lens = responses.ids.cpu(), responses.response_mask.cpu(), responses.prompt_lens.cpu()
    rows = range(len(responses)) if rows is None else rows
    return [(ids[b][:int(lens[b]) + int(mask[b].sum())].tolist(), int(lens[b])) for b in rows]


def finetune_on(model: GPT, examples: Sequence[tuple[list[int], int]], cfg: TrainConfig, progress: bool = False,
                desc: str = "sft") -> dict[str, list[float]]:
    """SFT of ``model`` in place on given examples ((ids, prompt_len) pairs): ``cfg.steps`` steps of `sft_loss` on
    batches from `example_sampler` (seeded with ``cfg.seed``), through `llmcourse.pretraining.train` (warmup +
    cosine, clipping). Returns its history."""
    batch = example_sampler(examples, cfg.batch_size, cfg.seed)
    device = next(model.parameters()).device
    pad = special_id(tw.PAD)
    return train(model, lambda m, step: sft_loss(m, *(t.to(device) for t in batch(step)), pad), cfg,
                 progress=progress, desc=desc)


def finetune(model: GPT, problems: Sequence[tw.Problem], cfg: TrainConfig, reasoned_share: float = 1.0,
             progress: bool = False, desc: str = "sft") -> dict[str, list[float]]:
    """SFT of ``model`` in place on the task world's own responses to ``problems`` (a ``reasoned_share`` of them
    reasoned, `sft_sampler`): `finetune_on` their examples. Returns its history.

    The base model's second stage (`llmcourse.base_model`, a quarter reasoned) and chapter 06's runs (every
    response reasoned, full fine-tuning or LoRA: `llmcourse.lora.sft_run`) are this function.
    """
    styles = tw.draw_styles(len(problems), reasoned_share, cfg.seed)
    return finetune_on(model, [encode_example(p, s) for p, s in zip(problems, styles)], cfg, progress, desc)
