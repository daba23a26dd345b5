"""Preference pairs from the task world: the stand-in for human labellers (chapters 07 and 08).

For each prompt the model answers twice; the task world's rules score both answers
(`llmcourse.rule_rewards.rule_rewards`: 1 for the right answer plus 0.1 for the reasoned format), the
better one is *chosen*, the other *rejected*, and a tie (both right in the same style, or both
wrong in the same style) is left out, as labellers' ties are in the preference datasets of
InstructGPT and Anthropic's HH. So a right answer beats a wrong one, and between two right (or
two wrong) answers the reasoned one wins.

Responses are kept as the token ids that were sampled (the end-of-text token included when the
response finished), not as text: DPO and the reward model score exactly those tokens.
`PreferencePairs.chosen_responses()` / `rejected_responses()` pack them into
`llmcourse.sampling.Responses` batches, the shape every log-prob and reward helper takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.model import GPT
from llmcourse.rule_rewards import rule_rewards
from llmcourse.sampling import Responses, pack_responses, prompt_ids, sample_responses


@dataclass
class PreferencePairs:
    """N labelled pairs: for problem i, response ``chosen[i]`` is preferred to ``rejected[i]``."""

    problems: list[tw.Problem]
    """(N,) the problem each pair answers."""
    chosen: list[list[int]]
    """(N,) the preferred response's token ids (EOS included if it finished)."""
    rejected: list[list[int]]
    """(N,) the other response's token ids."""
    chosen_reward: torch.Tensor
    """(N,) float32 rule reward of the chosen response."""
    rejected_reward: torch.Tensor
    """(N,) float32 rule reward of the rejected response (always lower)."""
    chosen_text: list[str]
    """(N,) the chosen responses decoded, without EOS."""
    rejected_text: list[str]
    """(N,) the rejected responses decoded, without EOS."""

    def __len__(self) -> int:
        return len(self.problems)

    def subset(self, index: Sequence[int]) -> "PreferencePairs":
        """The pairs at ``index`` (a list of positions), in that order."""
        idx = list(index)
        return PreferencePairs(problems=[self.problems[i] for i in idx], chosen=[self.chosen[i] for i in idx],
                               rejected=[self.rejected[i] for i in idx],
                               chosen_reward=self.chosen_reward[idx], rejected_reward=self.rejected_reward[idx],
                               chosen_text=[self.chosen_text[i] for i in idx],
                               rejected_text=[self.rejected_text[i] for i in idx])

    def chosen_responses(self, device: torch.device | str | None = None) -> Responses:
        """The chosen responses after their prompts, right-padded: a `Responses` of N rows."""
        return pack_responses(prompt_ids(self.problems), self.chosen, device=device)

    def rejected_responses(self, device: torch.device | str | None = None) -> Responses:
        """The rejected responses after their prompts, right-padded: a `Responses` of N rows."""
        return pack_responses(prompt_ids(self.problems), self.rejected, device=device)


def preference_index(rewards: torch.Tensor) -> torch.Tensor:
    """Which response of each pair wins: rewards (N, 2) -> (M, 2) long rows ``[chosen row, rejected row]``.

    ``rewards[i]`` are the rule rewards of problem i's two answers, rows ``2i`` and ``2i + 1`` of the
    prompt-major batch. The higher reward is chosen; a tie (equal rewards) gives no row. Rows are
    in problem order; ``rewards`` is not changed.

    >>> preference_index(torch.tensor([[0.0, 1.1], [1.0, 1.0], [1.1, 1.0]]))
    tensor([[1, 0],
            [4, 5]])
    """
    first_wins = rewards[:, 0] > rewards[:, 1]                           # (N,)
    keep = rewards[:, 0] != rewards[:, 1]                                # (N,) ties are left out
    rows = 2 * torch.arange(rewards.size(0), device=rewards.device)      # (N,) row of each first answer
    chosen = torch.where(first_wins, rows, rows + 1)                     # (N,)
    rejected = torch.where(first_wins, rows + 1, rows)                   # (N,)
    return torch.stack([chosen, rejected], dim=1)[keep]                  # (M, 2)


def label_pairs(problems: Sequence[tw.Problem], responses: Responses,
                index_fn: Callable[[torch.Tensor], torch.Tensor] = preference_index) -> PreferencePairs:
    """Label a batch of 2 responses per problem (prompt-major, ``responses.n_samples == 2``).

    The response with the higher rule reward is chosen; pairs with equal rewards are dropped.
    ``index_fn`` picks the rows from the (N, 2) rewards (`preference_index`).
    """
    if responses.n_samples != 2 or len(responses) != 2 * len(problems):
        raise ValueError(f"need 2 responses per problem, got {len(responses)} rows of {responses.n_samples} "
                         f"for {len(problems)} problems")
    rewards = rule_rewards(responses, problems).cpu().view(-1, 2)       # (N, 2)
    index = index_fn(rewards).tolist()                                   # M rows of [chosen, rejected]
    ids, mask, flat = responses.ids.cpu(), responses.response_mask.cpu(), rewards.view(-1)

    def response_tokens(row: int) -> list[int]:
        return ids[row][mask[row]].tolist()

    return PreferencePairs(problems=[problems[c // 2] for c, _ in index],
                           chosen=[response_tokens(c) for c, _ in index],
                           rejected=[response_tokens(r) for _, r in index],
                           chosen_reward=flat[[c for c, _ in index]].clone(),
                           rejected_reward=flat[[r for _, r in index]].clone(),
                           chosen_text=[responses.texts[c] for c, _ in index],
                           rejected_text=[responses.texts[r] for _, r in index])


def sample_pairs(model: GPT, problems: Sequence[tw.Problem], seed: int, temperature: float = 1.0,
                 max_new_tokens: int = 48) -> PreferencePairs:
    """Answer each problem twice with ``model`` (sampling, seeded) and label the pairs by the rules.

    About half of the problems give a pair with the shipped base model; the rest are ties.
    """
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    responses = sample_responses(model, list(problems), n_samples=2, max_new_tokens=max_new_tokens,
                                 temperature=temperature, generator=g)
    return label_pairs(list(problems), responses)
