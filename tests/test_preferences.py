"""Preference pairs labelled by the rules: hand-built batches, and pairs sampled from the base model."""

import torch

from llmcourse import taskworld as tw
from llmcourse.preferences import label_pairs, sample_pairs
from llmcourse.sampling import pack_responses, prompt_ids
from llmcourse.tokenizer import encode, special_id

EOS = special_id(tw.EOS)


def _batch(problems, texts):
    prompts = [ids for ids in prompt_ids(problems) for _ in range(2)]
    return pack_responses(prompts, [encode(t) + [EOS] for t in texts], n_samples=2)


def test_label_pairs_by_hand():
    p, q, s = tw.Problem(2, 3), tw.Problem(10, 7), tw.Problem(4, 4)
    texts = ["<answer>6</answer>", "<think>2+3=5</think><answer>5</answer>",       # wrong bare < right reasoned
             "<answer>17</answer>", "<answer>17</answer>",                          # a tie: dropped
             "<think>4+4=8</think><answer>8</answer>", "<answer>8</answer>"]        # reasoned beats bare, both right
    pairs = label_pairs([p, q, s], _batch([p, q, s], texts))
    assert len(pairs) == 2 and pairs.problems == [p, s]
    assert pairs.chosen_text == [texts[1], texts[4]] and pairs.rejected_text == [texts[0], texts[5]]
    assert torch.allclose(pairs.chosen_reward, torch.tensor([1.1, 1.1])) and torch.allclose(pairs.rejected_reward, torch.tensor([0.0, 1.0]))
    assert pairs.chosen[0] == encode(texts[1]) + [EOS]                      # the sampled tokens, EOS included
    chosen = pairs.chosen_responses()
    assert chosen.texts == pairs.chosen_text and chosen.finished.all()
    assert chosen.ids[0, : chosen.prompt_lens[0]].tolist() == prompt_ids([p])[0]
    assert pairs.subset([1]).chosen_text == [texts[4]]


def test_sampled_pairs_from_the_base_model(base):
    problems = tw.sample_problems(200, seed=5)
    pairs = sample_pairs(base, problems, seed=0)
    assert 40 <= len(pairs) <= 160                                           # ties are common, pairs too
    assert bool((pairs.chosen_reward > pairs.rejected_reward).all())
    for prob, c, r in zip(pairs.problems, pairs.chosen_text, pairs.rejected_text):
        assert tw.rule_reward(c, prob) > tw.rule_reward(r, prob)
    again = sample_pairs(base, problems, seed=0)                             # seeded: the same pairs
    assert again.chosen == pairs.chosen and again.rejected == pairs.rejected
    rejected = pairs.rejected_responses()
    assert rejected.texts == pairs.rejected_text
    assert (rejected.response_lens == torch.tensor([len(r) for r in pairs.rejected])).all()
