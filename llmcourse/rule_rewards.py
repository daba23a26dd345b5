"""Rule rewards for a batch of responses (the task world's rules applied to every row).

`rule_rewards` scores every response of a batch with the task world's rules
(`llmcourse.taskworld.rule_reward`, DeepSeek-R1-Zero style): 1 for the right answer, plus
``format_weight`` when the response has the reasoned shape ``<think>…</think><answer>N</answer>``.
So a right reasoned answer earns 1.1, a right bare ``<answer>N</answer>`` 1.0, a wrong but
well-formed one 0.1, anything else 0. GRPO turns them into group-relative advantages
(`llmcourse.grpo.group_advantages`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.sampling import Responses


def rule_rewards(responses: Responses | Sequence[str], problems: Sequence[tw.Problem],
                 format_weight: float = 0.1) -> torch.Tensor:
    """(B,) float32 rewards: `taskworld.rule_reward` of each response against its problem.

    responses: a `Responses` (its ``texts`` are scored; the result is on its device) or B texts.
    problems: one per row, or, for a `Responses`, one per prompt (each is then repeated
    ``n_samples`` times, prompt-major).

    >>> p = tw.Problem(2, 3)
    >>> rule_rewards(["<think>2+3=5</think><answer>5</answer>", "<answer>5</answer>",
    ...               "<think>2+3=6</think><answer>6</answer>", "5"], [p] * 4)
    tensor([1.1000, 1.0000, 0.1000, 0.0000])
    """
    if isinstance(responses, Responses):
        texts, device = responses.texts, responses.ids.device
        if len(problems) != len(texts):
            problems = responses.per_row(problems)                      # one per prompt -> one per row
    else:
        texts, device = list(responses), None
    if len(problems) != len(texts):
        raise ValueError(f"{len(texts)} responses but {len(problems)} problems")
    rewards = [tw.rule_reward(text, p, format_weight=format_weight) for text, p in zip(texts, problems)]
    return torch.tensor(rewards, dtype=torch.float32, device=device)    # (B,)
