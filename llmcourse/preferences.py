"""Preference pairs from the task world: the stand-in for human labellers (chapters 07 and 08).

For each prompt the model answers twice; the task world's rules score both answers
(`llmcourse.rewards.rule_rewards`: 1 for the right answer plus 0.1 for the reasoned format), the
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
from typing import Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.model import GPT
from llmcourse.rewards import rule_rewards
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


def label_pairs(problems: Sequence[tw.Problem], responses: Responses) -> PreferencePairs:
    """Label a batch of 2 responses per problem (prompt-major, ``responses.n_samples == 2``).

    The response with the higher rule reward is chosen; pairs with equal rewards are dropped.
    """
    if responses.n_samples != 2 or len(responses) != 2 * len(problems):
        raise ValueError(f"need 2 responses per problem, got {len(responses)} rows of {responses.n_samples} "
                         f"for {len(problems)} problems")
    rewards = rule_rewards(responses, problems).cpu().view(-1, 2)       # (N, 2)
    rows = []
    for i in range(len(problems)):
        pair = rewards[i]
        r0, r1 = float(pair[0]), float(pair[1])
        if r0 == r1:
            continue                                                     # a tie: no preference
        rows.append((i, 2 * i + (0 if r0 > r1 else 1), 2 * i + (1 if r0 > r1 else 0)))
    ids, mask = responses.ids.cpu(), responses.response_mask.cpu()

    def response_tokens(row: int) -> list[int]:
        return ids[row][mask[row]].tolist()

    flat = rewards.view(-1)
    return PreferencePairs(problems=[problems[i] for i, _, _ in rows],
                           chosen=[response_tokens(c) for _, c, _ in rows],
                           rejected=[response_tokens(r) for _, _, r in rows],
                           chosen_reward=torch.stack([flat[c] for _, c, _ in rows]) if rows else torch.zeros(0),
                           rejected_reward=torch.stack([flat[r] for _, _, r in rows]) if rows else torch.zeros(0),
                           chosen_text=[responses.texts[c] for _, c, _ in rows],
                           rejected_text=[responses.texts[r] for _, _, r in rows])


def sample_pairs(model: GPT, problems: Sequence[tw.Problem], seed: int, temperature: float = 1.0,
                 max_new_tokens: int = 48) -> PreferencePairs:
    """Answer each problem twice with ``model`` (sampling, seeded) and label the pairs by the rules.

    About half of the problems give a pair with the shipped base model; the rest are ties.
    """
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    responses = sample_responses(model, list(problems), n_samples=2, max_new_tokens=max_new_tokens,
                                 temperature=temperature, generator=g)
    return label_pairs(list(problems), responses)
