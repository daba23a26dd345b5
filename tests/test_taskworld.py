"""The task world: format, generator, held-out set, verifier (hand-made examples)."""

import numpy as np
import pytest

from llmcourse import taskworld as tw


def test_reasoning_is_column_sums_with_carries():
    assert tw.reasoning(tw.Problem(47, 385)) == "7+5=12,4+8+1=13,0+3+1=4"
    assert tw.reasoning(tw.Problem(2, 3)) == "2+3=5"
    assert tw.reasoning(tw.Problem(99, 1)) == "9+1=10,9+0+1=10"


def test_transcript_format():
    p = tw.Problem(47, 385)
    assert tw.transcript(p) == ("<|user|>What is 47+385?<|assistant|>"
                                "<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer><|endoftext|>")


def test_ideal_response_is_correct_and_formatted_for_many_problems():
    for p in tw.sample_problems(300, seed=1):
        assert tw.is_correct(tw.response(p), p) and tw.format_ok(tw.response(p))
        assert tw.rule_reward(tw.response(p), p) == 1.1


def test_verifier_on_hand_made_responses():
    p = tw.Problem(2, 2)
    assert tw.is_correct("<think>2+2=4</think><answer>4</answer>", p)
    assert tw.is_correct("<think>2+2=4</think><answer> 4 </answer>", p)       # spaces stripped
    assert not tw.is_correct("<think>2+2=4</think><answer>04</answer>", p)    # exact decimal only
    assert not tw.is_correct("<think>2+2=4</think><answer>5</answer>", p)
    assert not tw.is_correct("the answer is 4", p)
    assert tw.is_correct("<answer>4</answer>", p) and not tw.format_ok("<answer>4</answer>")


def test_format_checker_on_hand_made_responses():
    assert tw.format_ok("<think>2+2=4</think><answer>4</answer>")
    assert tw.format_ok("<think>2+2=4</think><answer>4</answer><|endoftext|>junk after EOS")
    assert not tw.format_ok("<think>2+2=4</think><answer>4</answer>extra")
    assert not tw.format_ok("<think>2+2=4<answer>4</answer>")
    assert not tw.format_ok("<think>2+2=4</think><answer>four</answer>")
    assert not tw.format_ok("")


def test_generator_is_seeded_and_respects_digits():
    assert tw.sample_problems(20, seed=3) == tw.sample_problems(20, seed=3)
    assert tw.sample_problems(20, seed=3) != tw.sample_problems(20, seed=4)
    cfg = tw.TaskConfig(min_digits=2, max_digits=2)
    rng = np.random.default_rng(0)
    assert all(10 <= x <= 99 for _ in range(100) for x in (lambda p: (p.a, p.b))(tw.sample_problem(rng, cfg)))


def test_eval_set_is_fixed_distinct_and_held_out():
    ev = tw.eval_problems()
    assert len(ev) == tw.EVAL_SIZE == len(set(ev))
    assert ev[:3] == tw.eval_problems()[:3]
    assert not set(ev) & set(tw.sample_problems(5000, seed=0))


def test_bare_style_is_the_answer_alone_and_fails_the_format():
    p = tw.Problem(47, 385)
    assert tw.bare_response(p) == tw.response(p, style="bare") == "<answer>432</answer>"
    assert tw.response(p) == tw.response(p, style="reasoned")
    assert tw.transcript(p, style="bare") == "<|user|>What is 47+385?<|assistant|><answer>432</answer><|endoftext|>"
    assert tw.is_correct(tw.bare_response(p), p) and not tw.format_ok(tw.bare_response(p))
    assert tw.rule_reward(tw.bare_response(p), p) == 1.0 < tw.rule_reward(tw.response(p), p)
    with pytest.raises(ValueError, match="unknown style"):
        tw.response(p, style="terse")


def test_is_reasoned_looks_for_the_think_tag_not_the_format():
    assert tw.is_reasoned("<think>2+2=4</think><answer>4</answer>")
    assert tw.is_reasoned("<think>2+2=4<answer>5</answer>")            # reasons, badly formatted
    assert not tw.is_reasoned("<answer>4</answer>")
    assert not tw.is_reasoned("<answer>4</answer><|endoftext|><think>")  # after EOS does not count


def test_digits_and_carries_counted_by_hand():
    assert [tw.n_digits(tw.Problem(a, b)) for a, b in [(3, 4), (47, 385), (120, 5), (99, 10)]] == [1, 3, 3, 2]
    # 47+385: 7+5=12 carries, 4+8+1=13 carries, 0+3+1=4 does not
    assert tw.n_carries(tw.Problem(47, 385)) == 2
    assert tw.n_carries(tw.Problem(12, 34)) == 0
    assert tw.n_carries(tw.Problem(5, 5)) == 1          # the carry out of the last column counts
    assert tw.n_carries(tw.Problem(999, 1)) == 3


def test_hard_problems_are_the_three_digit_ones_with_two_carries_or_more():
    hard = tw.hard_problems()
    assert len(hard) == 135 and len(set(hard)) == 135
    assert all(tw.n_digits(p) == 3 and tw.n_carries(p) >= 2 for p in hard)
    assert set(hard) <= set(tw.eval_problems(tw.TaskConfig(3, 3)))
