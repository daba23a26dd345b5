"""The reward model: the score at the last real token, the Bradley–Terry loss against hand-worked values (TRL's
RewardTrainer is its oracle in test_oracle_trl.py), pairwise accuracy, padding invariance, training, and the shipped
checkpoint."""

import math

import pytest
import torch

from llmcourse import taskworld as tw
from llmcourse.tooling.checker import get_exercise, run_check
from llmcourse.checkpoint import CheckpointError, file_sha256
from llmcourse.tooling.exercises.reward_model import _last_rebuilt
from llmcourse.preferences import PreferencePairs, label_pairs, preference_index
from llmcourse.reward_model import (REWARD_MODEL_PATH, REWARD_MODEL_SHA256, RewardConfig, RewardModel,
                                    bradley_terry_loss, evaluate_pairs, last_token_values, load_reward_model,
                                    pairwise_accuracy, real_token_mask, reward_model_metrics, train_reward_model)
from llmcourse.sampling import pack_responses, prompt_ids
from llmcourse.tokenizer import encode, special_id

EOS = special_id(tw.EOS)


def _pairs(problems, chosen_texts, rejected_texts) -> PreferencePairs:
    """Hand-made pairs (texts in, sampled-token form out), as `sample_pairs` would return them."""
    chosen = [encode(t) + [EOS] for t in chosen_texts]
    rejected = [encode(t) + [EOS] for t in rejected_texts]
    return PreferencePairs(problems=list(problems), chosen=chosen, rejected=rejected,
                           chosen_reward=torch.ones(len(problems)), rejected_reward=torch.zeros(len(problems)),
                           chosen_text=list(chosen_texts), rejected_text=list(rejected_texts))


# --------------------------------------------------------------------------- the pieces


def test_last_token_values_reads_the_last_real_token_of_each_row():
    values = torch.arange(12.0).view(3, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert last_token_values(values, mask).tolist() == [0.0, 6.0, 11.0]


def test_real_token_mask_ends_at_the_end_of_text_token():
    r = pack_responses([[1, 2], [3]], [[49, EOS], [51, 52, 53, 54]])
    mask = real_token_mask(r)
    assert mask.int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert r.ids[0, mask[0].sum() - 1].item() == EOS                      # the score is read at the EOS


def test_bradley_terry_loss_hand_worked():
    # one pair with equal scores: −log σ(0) = log 2
    assert math.isclose(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), math.log(2), rel_tol=1e-6)
    # differences 2 and −1: (log(1 + e^−2) + log(1 + e^1)) / 2
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2
    got = bradley_terry_loss(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0])).item()
    assert math.isclose(got, expected, rel_tol=1e-6)
    # a margin of 1 on a difference of 1: −log σ(0) = log 2
    assert math.isclose(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item(),
                        math.log(2), rel_tol=1e-6)


def test_bradley_terry_loss_gradient_is_sigma_of_minus_the_difference():
    # ∂/∂c −log σ(c − r) = −(1 − σ(c − r)) = −σ(r − c); over N pairs, divided by N
    c = torch.tensor([2.0, -1.0], requires_grad=True)
    r = torch.tensor([0.0, 0.0], requires_grad=True)
    bradley_terry_loss(c, r).backward()
    expected = -torch.sigmoid(torch.tensor([-2.0, 1.0])) / 2
    assert torch.allclose(c.grad, expected) and torch.allclose(r.grad, -expected)


def test_bradley_terry_loss_is_finite_for_large_differences():
    loss = bradley_terry_loss(torch.tensor([0.0, 500.0]), torch.tensor([500.0, 0.0]))
    assert math.isclose(loss.item(), 250.0, rel_tol=1e-6)


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy(torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([0.0, 2.0, 4.0, -1.0])) == 0.5
    assert pairwise_accuracy(torch.zeros(5), torch.zeros(5)) == 0.0


def test_preference_index_matches_label_pairs():
    p, q = tw.Problem(2, 3), tw.Problem(4, 4)
    texts = ["<answer>6</answer>", "<think>2+3=5</think><answer>5</answer>", "<answer>8</answer>", "<answer>8</answer>"]
    batch = pack_responses([ids for ids in prompt_ids([p, q]) for _ in range(2)], [encode(t) + [EOS] for t in texts],
                           n_samples=2)
    assert preference_index(torch.tensor([[0.0, 1.1], [1.0, 1.0]])).tolist() == [[1, 0]]
    pairs = label_pairs([p, q], batch)
    assert pairs.chosen_text == [texts[1]] and pairs.rejected_text == [texts[0]] and pairs.problems == [p]


def test_a_score_rebuilt_from_numbers_gets_the_no_gradient_hint():
    result = run_check(get_exercise("7.2"), _last_rebuilt, seeds=[0])
    assert result.status == "wrong" and result.mistake.name == "no gradient"


# --------------------------------------------------------------------------- the model


def test_reward_model_starts_at_zero_and_leaves_the_base_model_alone(base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    rm = RewardModel.from_base(base)
    r = pack_responses(prompt_ids([tw.Problem(2, 3)]), [encode("<answer>5</answer>") + [EOS]])
    assert rm.score(r).tolist() == [0.0]                                  # the head starts at zero
    with torch.no_grad():
        rm.body.wte.weight.add_(1.0)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


def test_batched_scores_equal_one_at_a_time(base):
    # right padding must not change a row's score (causal attention: the pads come after the last real token)
    rm = RewardModel.from_base(base)
    torch.nn.init.normal_(rm.head.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    problems = [tw.Problem(2, 3), tw.Problem(47, 385), tw.Problem(9, 1)]
    texts = ["<answer>5</answer>", tw.response(problems[1]), "<answer>1"]          # the last one is unfinished
    responses = [encode(t) + ([EOS] if t.endswith(">") else []) for t in texts]
    batch = pack_responses(prompt_ids(problems), responses)
    with torch.no_grad():
        together = rm.score(batch)
        alone = torch.cat([rm.score(pack_responses(prompt_ids([p]), [resp])) for p, resp in zip(problems, responses)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert len(set(together.tolist())) == 3


def test_a_short_training_run_separates_right_from_wrong(base):
    problems = tw.sample_problems(32, seed=3)
    right = [tw.response(p) for p in problems]
    wrong = [f"<answer>{p.answer + 1}</answer>" for p in problems]
    pairs = _pairs(problems, right, wrong)
    rm = RewardModel.from_base(base)
    hist = train_reward_model(rm, pairs, RewardConfig(steps=20, batch_size=16, lr=3e-4, warmup_steps=2), progress=False)
    assert hist["loss"][0] == pytest.approx(math.log(2), rel=1e-5)        # every score starts at 0
    assert sum(hist["loss"][-3:]) / 3 < 0.5 * math.log(2)
    assert evaluate_pairs(rm, pairs)["accuracy"] == 1.0


# --------------------------------------------------------------------------- the shipped reward model


def test_shipped_reward_model_is_verified_and_records_its_accuracy():
    assert file_sha256(REWARD_MODEL_PATH) == REWARD_MODEL_SHA256
    metrics = reward_model_metrics()
    assert metrics["held_out_accuracy"] >= 0.9
    rm = load_reward_model()
    assert not rm.training and isinstance(rm, RewardModel)


def test_a_damaged_reward_model_is_refused(tmp_path):
    bad = tmp_path / "reward_model.pt"
    bad.write_bytes(REWARD_MODEL_PATH.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="sha256"):
        load_reward_model(path=bad)
    with pytest.raises(CheckpointError, match="missing"):
        load_reward_model(path=tmp_path / "nothing.pt")
