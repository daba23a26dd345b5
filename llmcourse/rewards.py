"""Rule rewards for a batch of responses, and GRPO's group-relative advantages.

`rule_rewards` scores every response of a batch with the task world's rules
(`llmcourse.taskworld.rule_reward`, DeepSeek-R1-Zero style): 1 for the right answer, plus
``format_weight`` when the response has the reasoned shape ``<think>…</think><answer>N</answer>``.
So a right reasoned answer earns 1.1, a right bare ``<answer>N</answer>`` 1.0, a wrong but
well-formed one 0.1, anything else 0.

`group_advantages` turns the rewards of a prompt's group of ``n_samples`` responses into
advantages without a critic (GRPO, Shao et al. 2024, "DeepSeekMath", §4.1.2): each reward minus
its group's mean, divided by the group's standard deviation,

    Â_i = (r_i − mean(r_group)) / (std(r_group) + eps),

or not divided (``scale=False``), as Dr. GRPO recommends (Liu et al. 2025, "Understanding
R1-Zero-like training"): dividing by a small std inflates the groups that are nearly all right
or all wrong. Rows are prompt-major, as in `llmcourse.sampling.Responses`: rows
``i * n_samples … (i + 1) * n_samples − 1`` are prompt i's group.
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


def group_advantages(rewards: torch.Tensor, n_samples: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(B,) rewards of prompt-major groups of ``n_samples`` -> (B,) group-relative advantages.

    ``scale=True`` (GRPO): divide by the group's sample standard deviation (n − 1 in the
    denominator, as ``torch.std`` and TRL) plus ``eps``. ``scale=False`` (Dr. GRPO): only
    subtract the mean. A group whose rewards are all equal carries no learning signal: its
    advantages are exactly 0 (not NaN, not rounding noise blown up by the division).

    One prompt, four samples, one right (1) and three wrong (0): mean 0.25, std 0.5:

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), n_samples=4, eps=0.0)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.1, 1.1]), n_samples=2, scale=False)
    tensor([ 0.5000, -0.5000,  0.0000,  0.0000,  0.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one value per row, shape (B,), got {tuple(rewards.shape)}")
    if n_samples < 2 or rewards.numel() % n_samples:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of n_samples={n_samples} (≥ 2)")
    groups = rewards.view(-1, n_samples)                                # (n_prompts, n_samples)
    advantages = groups - groups.mean(dim=1, keepdim=True)              # (n_prompts, n_samples)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    all_equal = (groups == groups[:, :1]).all(dim=1, keepdim=True)      # (n_prompts, 1)
    advantages = torch.where(all_equal, torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1)                                       # (B,)
