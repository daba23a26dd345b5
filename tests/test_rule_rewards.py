"""Rule rewards over a batch, and group-relative advantages (GRPO and Dr. GRPO), by hand.

Oracles: rewards worked out from the rules; `taskworld.rule_reward` row by row; advantages
worked by hand from the formula in Shao et al. 2024 (§4.1.2), with the sample standard deviation
and the ``+ 1e-4`` of TRL's ``GRPOTrainer``; invariances of the formula.
"""

import doctest
import inspect
import math

import pytest
import torch

from llmcourse import rule_rewards as rule_rewards_module
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.runtime import torch_threads
from llmcourse.grpo import group_advantages
from llmcourse.rule_rewards import rule_rewards
from llmcourse.sampling import pack_responses, sample_responses
from llmcourse.tokenizer import encode, special_id

EOS = special_id(tw.EOS)
P = tw.Problem(47, 385)                                                 # 432


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --------------------------------------------------------------------------- rule rewards

def test_rule_rewards_by_hand():
    texts = [tw.response(P),                                            # right, reasoned: 1 + 0.1
             "<answer>432</answer>",                                    # right, bare: 1
             "<think>7+5=12</think><answer>431</answer>",               # wrong, well formed: 0.1
             "<answer>431</answer>",                                    # wrong, bare: 0
             "432",                                                     # no tags: 0
             tw.response(P) + tw.EOS + "junk"]                           # everything after EOS is ignored
    r = rule_rewards(texts, [P] * len(texts))
    assert r.shape == (6,) and r.dtype == torch.float32
    assert torch.allclose(r, torch.tensor([1.1, 1.0, 0.1, 0.0, 0.0, 1.1]))
    assert torch.allclose(rule_rewards(texts, [P] * 6, format_weight=0.5), torch.tensor([1.5, 1.0, 0.5, 0, 0, 1.5]))
    assert torch.equal(rule_rewards(texts, [P] * 6, format_weight=0.0), torch.tensor([1.0, 1, 0, 0, 0, 1]))


def test_the_default_format_weight_is_the_task_worlds():
    ours = inspect.signature(rule_rewards).parameters["format_weight"].default
    assert ours == inspect.signature(tw.rule_reward).parameters["format_weight"].default


def test_each_response_is_scored_against_its_own_problem():
    q = tw.Problem(2, 3)
    r = rule_rewards([tw.response(P), tw.response(P), tw.response(q)], [P, q, q])
    assert torch.allclose(r, torch.tensor([1.1, 0.1, 1.1]))              # P's answer is wrong for q


def test_responses_with_one_problem_per_prompt_or_per_row():
    problems = [P, tw.Problem(2, 3)]
    answers = [tw.response(P), "<answer>432</answer>", "<answer>6</answer>", tw.response(problems[1])]
    r = pack_responses([encode(tw.prompt(p)) for p in problems for _ in range(2)],
                       [encode(a) + [EOS] for a in answers], n_samples=2)
    expected = torch.tensor([1.1, 1.0, 0.0, 1.1])
    assert torch.allclose(rule_rewards(r, problems), expected)           # one per prompt, repeated
    assert torch.allclose(rule_rewards(r, r.per_row(problems)), expected)   # one per row
    with pytest.raises(ValueError):
        rule_rewards(r, problems[:1])
    with pytest.raises(ValueError):
        rule_rewards(answers, problems)


def test_rewards_of_sampled_responses_agree_with_the_rule_row_by_row():
    problems = tw.sample_problems(4, seed=3)
    r = sample_responses(load_base_model(), problems, n_samples=4, max_new_tokens=40, temperature=1.0,
                         generator=torch.Generator().manual_seed(0))
    got = rule_rewards(r, problems)
    expected = [tw.rule_reward(text, p) for text, p in zip(r.texts, r.per_row(problems))]
    assert got.tolist() == pytest.approx(expected)
    adv = group_advantages(got, r.n_samples)
    assert adv.shape == (16,) and torch.isfinite(adv).all()
    assert torch.allclose(adv.view(4, 4).sum(dim=1), torch.zeros(4), atol=1e-5)


# --------------------------------------------------------------------------- group advantages

def test_group_advantages_by_hand():
    # one right (1) of four: mean 1/4, sample std sqrt((9/16 + 3/16) / 3) = 1/2
    assert torch.allclose(group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, eps=0.0),
                          torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # two of four: mean 1/2, std sqrt(1/3): ±sqrt(3)/2
    h = math.sqrt(3) / 2
    assert torch.allclose(group_advantages(torch.tensor([1.0, 0, 1, 0]), 4, eps=0.0), torch.tensor([h, -h, h, -h]))
    # Dr. GRPO: only the mean is subtracted
    assert torch.allclose(group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, scale=False),
                          torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_group_advantages_with_trls_epsilon():
    # (r − mean) / (std + 1e-4), std with n − 1: 0.75 / 0.5001 and −0.25 / 0.5001
    got = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    assert torch.allclose(got, torch.tensor([1.4997000600, -0.4999000200, -0.4999000200, -0.4999000200]), atol=1e-7)


def test_groups_are_prompt_major_and_independent():
    rewards_ = torch.tensor([1.1, 0.0, 0.1, 0.1, 1.0, 1.1])              # 3 prompts × 2 samples
    got = group_advantages(rewards_, 2, scale=False)
    assert torch.allclose(got, torch.tensor([0.55, -0.55, 0.0, 0.0, -0.05, 0.05]))
    # with two samples the scaled advantages are ±1/sqrt(2) whatever the gap (std = |gap|/sqrt(2))
    s = 1 / math.sqrt(2)
    assert torch.allclose(group_advantages(rewards_, 2, eps=0.0), torch.tensor([s, -s, 0, 0, -s, s]))
    # the same groups in another prompt order give the same advantages in that order
    perm = torch.tensor([4, 5, 0, 1, 2, 3])
    assert torch.equal(group_advantages(rewards_[perm], 2), group_advantages(rewards_, 2)[perm])


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_all_equal_groups_give_exactly_zero_not_nan(scale, eps):
    rewards_ = torch.tensor([0.1] * 7 + [1.1] * 7 + [0.0] * 7 + [1.0] * 6 + [0.0])   # 0.1·7 has rounding error
    got = group_advantages(rewards_, 7, scale=scale, eps=eps)
    assert torch.equal(got[:21], torch.zeros(21))
    assert torch.isfinite(got).all() and (got[21:27] > 0).all() and got[27] < 0


def test_scaled_advantages_ignore_shift_and_scale_of_the_rewards():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(24, generator=g, dtype=torch.float64)
    a = group_advantages(r, 6, eps=0.0)
    assert torch.allclose(group_advantages(3.0 * r - 2.0, 6, eps=0.0), a)
    assert torch.allclose(group_advantages(r + 5.0, 6, scale=False), group_advantages(r, 6, scale=False))
    assert torch.allclose(a.view(4, 6).std(dim=1), torch.ones(4, dtype=torch.float64))   # unit std per group


def test_the_rewards_are_not_changed():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    group_advantages(r, 2)
    assert torch.equal(r, torch.tensor([1.0, 0.0, 0.5, 0.5]))


def test_bad_group_sizes_are_refused():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(6), 4)                            # 6 rows are not groups of 4
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(6), 1)                            # a group of one has no baseline
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 3), 3)                         # one reward per row: (B,)


def test_docstring_examples():
    result = doctest.testmod(rule_rewards_module)
    assert result.attempted > 0 and result.failed == 0
