"""Evaluation: pass@k against its definition, metrics on hand-made responses, and the shipped base model.

The base model's metrics were recorded when it was trained (`checkpoint.base_model_metrics`).
Re-evaluating it must give them back: the greedy ones almost exactly (a near-tie between two
tokens could flip on another CPU), the sampled ones within ±4 points. Sampling draws each token
by comparing a uniform number with the cumulative probabilities, so a last-bit difference in a
logit (another CPU, SIMD path or GPU) can flip a token that sits near a boundary and change that
response; with 1,024 samples a handful of flips moves a rate by well under 4 points, while a
different model would miss by far more.
"""

import math

import pytest
import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import base_model_metrics, load_base_model
from llmcourse.evaluation import accuracy_by, evaluate, pass_at_k, score_samples


def chen_pass_at_k(n: int, c: int, k: int) -> float:
    """The numerically stable form of Chen et al. (2021)'s estimator, as printed in the paper."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def test_pass_at_k_worked_values():
    assert pass_at_k(4, 1, 1) == 0.25                 # k = 1: the share of right samples
    assert pass_at_k(4, 1, 4) == 1.0                  # k = n: any right sample
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)   # 1 - C(3,2)/C(5,2)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


@pytest.mark.parametrize("n", [1, 4, 10, 16])
def test_pass_at_k_equals_the_papers_stable_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(chen_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_the_chance_that_a_random_k_subset_holds_a_right_answer():
    import itertools
    right = [True, False, False, True, False, False]
    subsets = list(itertools.combinations(right, 3))
    assert pass_at_k(6, 2, 3) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_accuracy_by_carries_and_digits_counted_by_hand():
    ps = [tw.Problem(1, 2), tw.Problem(5, 5), tw.Problem(47, 385), tw.Problem(999, 1), tw.Problem(12, 34)]
    correct = [True, False, True, False, True]
    # carries: 0, 1, 2, 3, 0 -> {0: 2/2, 1: 0/1, 2: 1/1, 3: 0/1}
    assert accuracy_by(ps, correct, tw.n_carries) == {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0}
    # digits: 1, 1, 3, 3, 2 -> {1: 1/2, 2: 1/1, 3: 1/2}
    assert accuracy_by(ps, correct, tw.n_digits) == {1: 0.5, 2: 1.0, 3: 0.5}


def test_sampled_metrics_on_hand_made_responses():
    p, q = tw.Problem(47, 385), tw.Problem(2, 3)
    texts = [tw.response(p), "<answer>432</answer>", "<answer>431</answer>", "<think>7+5=12</think><answer>1</answer>",
             "<answer>6</answer>", "<answer>6</answer>", "<answer>7</answer>", "<think>2+3=5</think><answer>5</answer>x"]
    m = score_samples([p, q], texts, k=4)
    assert m["sampled_correct"] == [True, True, False, False, False, False, False, True]
    assert m["sampled_accuracy"] == 3 / 8
    assert m["pass_at_k"] == 1.0                          # both problems have a right sample
    assert m["format_rate"] == 2 / 8                      # the last one has text after </answer>
    assert m["reasoned_share"] == 3 / 8
    assert m["reasoned_accuracy"] == 2 / 3 and m["bare_accuracy"] == 1 / 5
    assert m["accuracy_by_digits"] == {1: 1 / 4, 3: 2 / 4}
    with pytest.raises(ValueError, match="responses"):
        score_samples([p, q], texts[:7], k=4)


def test_a_style_with_no_samples_has_accuracy_nan():
    m = score_samples([tw.Problem(1, 1)], ["<answer>2</answer>"], k=1)
    assert math.isnan(m["reasoned_accuracy"]) and m["bare_accuracy"] == 1.0


# --------------------------------------------------------------------------- the shipped base model

@pytest.fixture(scope="module")
def base_eval():
    return evaluate(load_base_model())


GREEDY_TOLERANCE = 0.01     # 2 of 256 problems
SAMPLED_TOLERANCE = 0.04


def test_re_evaluating_the_shipped_model_reproduces_its_recorded_metrics(base_eval):
    recorded = base_model_metrics()
    for key in ("greedy_accuracy", "greedy_format_rate"):
        assert base_eval[key] == pytest.approx(recorded[key], abs=GREEDY_TOLERANCE), key
    for key in ("sampled_accuracy", "pass_at_k", "format_rate", "reasoned_share", "reasoned_accuracy", "bare_accuracy"):
        assert base_eval[key] == pytest.approx(recorded[key], abs=SAMPLED_TOLERANCE), key
    assert base_eval["accuracy_by_digits"].keys() == recorded["accuracy_by_digits"].keys()


def test_shipped_model_reasons_rarely_but_well(base_eval):
    """Issue targets, with margin: mostly bare (and then often wrong), usually right when it reasons."""
    m = base_eval
    assert m["greedy_accuracy"] <= 0.45
    assert m["sampled_accuracy"] <= 0.45
    assert m["format_rate"] <= 0.65
    assert m["reasoned_accuracy"] >= 0.88
    assert m["bare_accuracy"] <= 0.35
    assert m["pass_at_k"] >= m["sampled_accuracy"] + 0.15      # room between pass@1 and pass@4
