"""Rejection-sampling fine-tuning and the R1 pipeline (chapter 12): the filter by hand, the control, toy-size runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmcourse import grpo
from llmcourse import r1_recipe as r1
from llmcourse import rejection_sampling as rs
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.pretraining import TrainConfig

P, Q = tw.Problem(47, 385), tw.Problem(32, 400)              # both make 432
IDEAL = tw.response(P)                                 # <think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>
SLIP = "<think>7+5=13,4+8+1=13,0+3+1=4</think><answer>432</answer>"    # a wrong step, the right answer
WRONG = "<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>442</answer>"
BARE = "<answer>432</answer>"
JUNK = "<think>1+1=2</think><answer>432</answer>"            # well-formed and right for P and for Q

TINY_SFT = TrainConfig(steps=2, batch_size=4, max_lr=3e-4, min_lr=3e-5, warmup_steps=1, weight_decay=0.0)
TINY_RFT = replace(rs.RECIPE, rounds=2, problems_per_round=4, samples_per_problem=3, sft=TINY_SFT)
TINY_GRPO = replace(grpo.RECIPE, updates=1, prompts_per_update=2, samples_per_prompt=2)
TINY_R1 = replace(r1.RECIPE, cold_start_examples=4, cold_start=TINY_SFT, rl=TINY_GRPO, problems=3,
                  samples_per_problem=2, sft=TINY_SFT)


# --------------------------------------------------------------------------- the filter, by hand


def test_a_right_bare_answer_fails_the_format_and_a_wrong_reasoned_one_the_answer():
    assert rs.filter_samples([BARE, WRONG, IDEAL], [P] * 3, 4) == [2]


def test_a_response_with_and_without_its_end_of_text_token_is_one_response():
    assert rs.filter_samples([IDEAL + tw.EOS, IDEAL, SLIP], [P] * 3, 4) == [0, 2]


def test_at_most_m_distinct_per_problem_the_first_ones():
    texts = [IDEAL, IDEAL, SLIP, JUNK]
    assert rs.filter_samples(texts, [P] * 4, 2) == [0, 2]     # the duplicate takes no place; JUNK comes too late
    assert rs.filter_samples(texts, [P] * 4, 1) == [0]
    assert rs.filter_samples(texts, [P] * 4, 3) == [0, 2, 3]


def test_the_same_text_for_two_problems_is_two_examples_and_m_is_per_problem():
    assert rs.filter_samples([JUNK, JUNK, IDEAL, JUNK], [P, Q, P, Q], 1) == [0, 1]


def test_rows_need_not_be_grouped_by_problem():
    assert rs.filter_samples([IDEAL, JUNK, IDEAL + tw.EOS, SLIP, JUNK], [P, Q, P, P, Q], 2) == [0, 1, 3]


def test_nothing_right_keeps_nothing_and_the_inputs_are_not_changed():
    texts, problems = [BARE, WRONG, IDEAL + tw.EOS], [P, P, P]
    assert rs.filter_samples(texts[:2], problems[:2], 3) == []
    rs.filter_samples(texts, problems, 3)
    assert texts == [BARE, WRONG, IDEAL + tw.EOS] and problems == [P, P, P]


def test_random_rows_are_distinct_sorted_and_seeded():
    rows = rs.random_rows(50, 12, torch.Generator().manual_seed(3))
    assert len(set(rows)) == 12 and rows == sorted(rows) and all(0 <= i < 50 for i in rows)
    assert rows == rs.random_rows(50, 12, torch.Generator().manual_seed(3))
    assert rs.random_rows(5, 9, torch.Generator().manual_seed(0)) == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- the recipes


def test_the_recipe_samples_as_many_responses_as_chapter_10s_grpo():
    rft = rs.RECIPE.rounds * rs.RECIPE.problems_per_round * rs.RECIPE.samples_per_problem
    g = grpo.RECIPE
    assert rft == g.updates * g.prompts_per_update * g.samples_per_prompt == 5120
    assert rs.CONTROL == replace(rs.RECIPE, selection="random")
    assert r1.RECIPE.rl is grpo.RECIPE and r1.RECIPE.sft == rs.RECIPE.sft


# --------------------------------------------------------------------------- toy runs


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_rft_logs_one_value_per_round_and_keeps_only_right_samples():
    seen = []
    model, h = rs.rft_run(TINY_RFT, seed=0, on_eval=lambda r, m: seen.append(r))
    assert seen == [0, 1, 2]
    assert h["sampled"] == [12, 12] and len(h["seconds"]) == 1
    assert all(k <= 4 * TINY_RFT.max_per_problem for k in h["kept"])
    assert all(a == 1.0 for a, k in zip(h["kept_accuracy"], h["kept"]) if k)
    assert h["examples"] == h["kept"]                           # continuing: each round's own samples


def test_the_control_draws_as_many_rows_as_the_filter_keeps_from_the_same_samples():
    _, filtered = rs.rft_run(replace(TINY_RFT, rounds=1, problems_per_round=8), seed=1)
    _, control = rs.rft_run(replace(TINY_RFT, rounds=1, problems_per_round=8, selection="random"), seed=1)
    assert control["kept"] == filtered["kept"] and filtered["kept"][0] > 0   # round 1: the same model and samples
    assert control["sample_accuracy"] == filtered["sample_accuracy"]


def test_a_run_is_determined_by_its_seed():
    m1, h1 = rs.rft_run(TINY_RFT, seed=2)
    m2, h2 = rs.rft_run(TINY_RFT, seed=2)
    assert {k: v for k, v in h1.items() if k != "seconds"} == {k: v for k, v in h2.items() if k != "seconds"}
    w1, w2 = _weights(m1), _weights(m2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_restarting_differs_from_continuing_only_from_round_two():
    one = replace(TINY_RFT, rounds=1)
    a, _ = rs.rft_run(one, seed=0)
    b, _ = rs.rft_run(replace(one, restart=True), seed=0)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a).values(), _weights(b).values()))
    _, h = rs.rft_run(replace(TINY_RFT, restart=True), seed=0)
    assert h["examples"] == [h["kept"][0], h["kept"][0] + h["kept"][1]]     # all kept so far


def test_the_r1_pipeline_shows_each_stage_and_fine_tunes_the_base_model_last():
    seen = []
    _, h = r1.r1_run(TINY_R1, seed=0, on_stage=lambda name, m: seen.append(name))
    assert seen == list(r1.STAGES[:4])
    assert len(h["stage_seconds"]) == 3 and h["rs_sampled"] == [6] and h["cold_start_examples"] == [4]
    frozen = TrainConfig(steps=1, batch_size=2, max_lr=0.0, min_lr=0.0, warmup_steps=1, weight_decay=0.0)
    model, _ = r1.r1_run(replace(TINY_R1, sft=frozen), seed=0)   # stage 3 with lr 0: the base model, untouched
    base = _weights(load_base_model())
    assert all(torch.equal(v, base[k]) for k, v in _weights(model).items())


@pytest.mark.parametrize("selection", ["best", ""])
def test_an_unknown_selection_is_refused(selection):
    with pytest.raises(ValueError, match="selection"):
        rs.train_rft(load_base_model(), replace(TINY_RFT, selection=selection))
