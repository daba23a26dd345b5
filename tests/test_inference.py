"""Test-time compute (chapter 11): the vote, best-of-N, its KL, verifier metrics, forced styles; hand-worked values
and exact computations as oracles."""

import math

import pytest
import torch

from llmcourse import inference as inf
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import pass_at_k_curve
from llmcourse.kl import categorical_kl
from llmcourse.sampling import pack_responses
from llmcourse.tokenizer import decode, encode


@pytest.fixture(scope="module")
def base():
    return load_base_model()


# --------------------------------------------------------------------------- the vote


def test_majority_vote_by_hand():
    assert inf.majority_vote(["12", "13", "13", None, "12"]) == "12"         # a tie: the first to appear wins
    assert inf.majority_vote(["13", "12", "13", None, "12"]) == "13"
    assert inf.majority_vote([None, None, None, "7", "8", "8"]) == "8"       # no answer casts no vote
    assert inf.majority_vote([None, None]) is None and inf.majority_vote([]) is None
    answers = ["5", None, "5"]
    inf.majority_vote(answers)
    assert answers == ["5", None, "5"]


def test_vote_accuracy_averages_disjoint_groups():
    p = [tw.Problem(2, 3), tw.Problem(4, 4)]
    answers = ["5", "6", "6", "6",  "8", "8", None, "9"]                    # prompt-major, K = 4
    # n = 1: 1/4 right on problem 0, 2/4 on problem 1; n = 2: groups (5, 6) -> 5 right, (6, 6) wrong; (8, 8), (None, 9)
    assert inf.vote_accuracy(answers, p, 1) == pytest.approx(3 / 8)
    assert inf.vote_accuracy(answers, p, 2) == pytest.approx(2 / 4)
    assert inf.vote_accuracy(answers, p, 4) == pytest.approx(1 / 2)         # 6 wins problem 0, 8 problem 1
    assert inf.vote_curve(answers, p, (1, 2, 4)) == pytest.approx([3 / 8, 1 / 2, 1 / 2])
    with pytest.raises(ValueError):
        inf.vote_accuracy(answers, p, 3)


def test_extract_answers_reuses_the_rules_parser():
    assert inf.extract_answers(["<think>2+3=5</think><answer>5</answer>", "<answer> 12 </answer>", "7"]) == \
        ["5", "12", None]


# --------------------------------------------------------------------------- best-of-N


def test_best_of_n_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.9, 2.0], [1.0, 0.0, 1.0, 1.0], [-3.0, -1.0, -2.0, 5.0]])
    assert inf.best_of_n(scores, 3).tolist() == [1, 0, 1]                    # ties: the first; only the first 3
    assert inf.best_of_n(scores, 4).tolist() == [3, 0, 3]
    assert inf.best_of_n(scores, 1).tolist() == [0, 0, 0]
    assert inf.best_of_n(scores, 3).dtype == torch.long


def test_best_of_n_mean_over_groups():
    scores = torch.tensor([[0.2, 0.8, 0.5, 0.1]])
    right = torch.tensor([[True, False, False, True]])
    assert inf.best_of_n_mean(scores, right, 1) == pytest.approx(0.5)
    assert inf.best_of_n_mean(scores, right, 2) == pytest.approx(0.0)       # picks 0.8 (wrong) and 0.5 (wrong)
    assert inf.best_of_n_mean(scores, scores, 2) == pytest.approx(0.65)     # the chosen scores: (0.8 + 0.5) / 2
    assert inf.best_of_n_curve(scores, right, (1, 2, 4)) == pytest.approx([0.5, 0.0, 0.0])


def test_best_of_n_by_the_rules_is_pass_at_n():
    g = torch.Generator().manual_seed(0)
    right = torch.rand(50, 16, generator=g) < torch.rand(50, 1, generator=g)
    curve = pass_at_k_curve(right.reshape(-1).tolist(), 16)
    assert inf.best_of_n_mean(right.float(), right, 16) == pytest.approx(curve[15])
    assert inf.best_of_n_mean(right.float(), right, 1) == pytest.approx(curve[0])


def test_best_of_n_kl_is_the_exact_kl_of_a_fine_continuous_reward():
    M = 20_000                                                               # M equally likely outcomes, no ties
    probs = torch.full((M,), 1.0 / M, dtype=torch.float64)
    for n in (2, 4, 16, 64):
        best = inf.best_of_n_distribution(probs, n)
        assert best.sum().item() == pytest.approx(1.0)
        exact = categorical_kl(best.log(), probs.log()).item()
        assert exact == pytest.approx(inf.best_of_n_kl(n), abs=2e-3)


def test_best_of_n_kl_bounds_the_kl_of_a_discrete_reward():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        probs = torch.rand(int(torch.randint(2, 12, (1,), generator=g)), generator=g, dtype=torch.float64)
        probs /= probs.sum()
        for n in (2, 8, 32):
            best = inf.best_of_n_distribution(probs, n)
            keep = best > 0
            exact = (best[keep] * (best[keep] / probs[keep]).log()).sum().item()
            assert exact <= inf.best_of_n_kl(n) + 1e-9


def test_best_of_n_kl_by_monte_carlo():
    """Draw best-of-4 from a uniform reward and estimate KL = E[log π_4(y)/π(y)] = E[log(4 u^3)]."""
    g = torch.Generator().manual_seed(2)
    u = torch.rand(200_000, 4, generator=g, dtype=torch.float64).max(dim=1).values
    estimate = (math.log(4) + 3 * u.log()).mean().item()                     # π_4(u) = 4u^3 against π(u) = 1
    assert estimate == pytest.approx(inf.best_of_n_kl(4), abs=0.01)


# --------------------------------------------------------------------------- judging a verifier


def test_auroc_and_threshold_by_hand():
    scores = torch.tensor([0.9, 0.2, 0.5, 0.5])
    labels = torch.tensor([True, False, True, False])
    assert inf.auroc(scores, labels) == 0.875              # pairs: 0.9 > 0.2, 0.9 > 0.5, 0.5 > 0.2, 0.5 = 0.5 (half)
    assert inf.auroc(-scores, labels) == 0.125
    assert math.isnan(inf.auroc(scores, torch.ones(4, dtype=torch.bool)))
    t = inf.best_threshold(torch.tensor([0.25, 0.5, 0.75, 1.0]), torch.tensor([False, False, True, True]))
    assert t == 0.625
    labels = torch.tensor([False, True, True, True])
    assert inf.threshold_accuracy(torch.tensor([0.25, 0.5, 0.75, 1.0]), labels, t) == 0.75


# --------------------------------------------------------------------------- sampling in a style


def test_sample_in_style_forces_the_first_token(base):
    problems = list(tw.eval_problems()[:6])
    g = torch.Generator().manual_seed(0)
    for style, first in ((tw.REASONED, tw.THINK), (tw.BARE, tw.ANSWER)):
        r = inf.sample_in_style(base, problems, style, n_samples=2, generator=g)
        assert len(r) == 12 and r.n_samples == 2
        assert all(t.startswith(first) for t in r.texts)
        assert all(tw.is_reasoned(t) == (style == tw.REASONED) for t in r.texts)
        for b in range(len(r)):
            start = int(r.prompt_lens[b])
            assert r.ids[b, :start].tolist() == encode(tw.prompt(problems[b // 2]))
            assert r.response_mask[b, start] and decode(r.ids[b][r.response_mask[b]].tolist()).startswith(first)
        assert inf.tokens_per_response(r) == pytest.approx(r.response_mask.sum().item() / 12)


def test_chain_of_thought_reasoned_beats_bare(base):
    cot = inf.chain_of_thought(base, tw.eval_problems()[:48], n_samples=4)
    assert set(cot) == {"reasoned", "bare", "own"}
    assert cot["reasoned"]["accuracy"] >= 0.8 and cot["bare"]["accuracy"] <= 0.5
    assert cot["reasoned"]["tokens"] > 2 * cot["bare"]["tokens"]             # the column sums cost tokens


def test_correct_matrix_is_prompt_major():
    p = [tw.Problem(2, 3), tw.Problem(1, 1)]
    r = pack_responses([encode(tw.prompt(q)) for q in p for _ in range(2)],
                       [encode("<answer>5</answer><|endoftext|>"), encode("<answer>6</answer><|endoftext|>"),
                        encode("<answer>3</answer><|endoftext|>"), encode("<answer>2</answer><|endoftext|>")],
                       n_samples=2)
    assert inf.correct_matrix(r, p).tolist() == [[True, False], [False, True]]
