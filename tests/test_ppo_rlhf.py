"""PPO for LLMs (llmcourse.ppo_rlhf): hand-worked values of InstructGPT's per-token reward, of GAE over masked
tokens, of the clipped policy and value losses (Schulman et al. 2017; TRL's PPOTrainer), and the loop's contract."""

import copy
import math

import pytest
import torch

from llmcourse import ppo_rlhf as pr
from llmcourse.tooling.checker import tiny_gpt
from llmcourse.reward_model import RewardModel

MASK = torch.tensor([[False, False, True, True, True, False],
                     [False, True, True, False, False, False]])


# --------------------------------------------------------------------------- the per-token reward


def test_token_rewards_put_the_score_on_the_last_response_token_and_the_kl_penalty_on_every_one():
    logp = torch.tensor([[0.0, 0.0, -1.0, -2.0, -0.5, 0.0], [0.0, -0.2, -0.4, 0.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0, -2.0, -1.0, -0.5, 0.0], [0.0, -0.2, -0.1, 0.0, 0.0, 0.0]])
    got = pr.token_rewards(torch.tensor([2.0, -1.0]), logp, ref, MASK, beta=0.5)
    # row 0: −β(logp − ref) = [−0.5, +0.5, 0] on columns 2..4, score 2 added at column 4
    # row 1: [0, +0.15] on columns 1..2, score −1 added at column 2
    want = torch.tensor([[0, 0, -0.5, 0.5, 2.0, 0], [0, 0, -1 + 0.15, 0, 0, 0]])
    assert torch.allclose(got, want)


def test_token_rewards_sum_to_the_score_minus_beta_times_the_sequence_kl():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(2, 6, generator=g), -torch.rand(2, 6, generator=g)
    score = torch.tensor([1.5, -0.5])
    got = pr.token_rewards(score, logp, ref, MASK, beta=0.1).sum(1)
    kl = torch.where(MASK, logp - ref, torch.zeros_like(logp)).sum(1)
    assert torch.allclose(got, score - 0.1 * kl)


def test_token_rewards_do_not_change_their_inputs_and_carry_no_gradient():
    logp = torch.zeros(2, 6, requires_grad=True)
    ref = torch.full((2, 6), -1.0)
    score = torch.tensor([1.0, 2.0], requires_grad=True)
    out = pr.token_rewards(score, logp, ref, MASK, beta=0.1)
    assert not out.requires_grad
    assert torch.equal(ref, torch.full((2, 6), -1.0)) and torch.equal(logp.detach(), torch.zeros(2, 6))


def test_last_response_column():
    assert pr.last_response_column(MASK).tolist() == [4, 2]
    assert pr.last_response_column(torch.zeros(1, 3, dtype=torch.bool)).tolist() == [-1]


# --------------------------------------------------------------------------- GAE over tokens


def _gae_loop(rewards, values, mask, gamma, lam):
    """TRL's loop, one row at a time over the response columns only (V = 0 after the last one)."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        cols = mask[b].nonzero().flatten().tolist()
        last = 0.0
        for j in reversed(range(len(cols))):
            t = cols[j]
            next_value = values[b, cols[j + 1]] if j + 1 < len(cols) else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv


def test_gae_with_lambda_one_is_the_return_minus_the_value():
    rewards = torch.tensor([[9.0, 9.0, -0.1, 0.2, 1.0, 9.0], [9.0, 0.5, 2.0, 9.0, 9.0, 9.0]])
    values = torch.tensor([[5.0, 5.0, 1.0, 0.5, 0.25, 5.0], [5.0, 1.0, 1.0, 5.0, 5.0, 5.0]])
    adv, ret = pr.gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    want_ret = torch.tensor([[0, 0, 1.1, 1.2, 1.0, 0], [0, 2.5, 2.0, 0, 0, 0]])
    assert torch.allclose(ret, want_ret)
    assert torch.allclose(adv, torch.where(MASK, want_ret - values, torch.zeros_like(values)))


def test_gae_with_lambda_zero_is_the_td_error():
    rewards = torch.tensor([[0, 0, 0.0, 0.0, 1.0, 0], [0, 0.0, 2.0, 0, 0, 0]])
    values = torch.tensor([[7, 7, 0.5, 0.75, 0.25, 7], [7, 1.0, 3.0, 7, 7, 7]])
    adv, _ = pr.gae(rewards, values, MASK, gamma=1.0, lam=0.0)
    want = torch.tensor([[0, 0, 0.75 - 0.5, 0.25 - 0.75, 1 - 0.25, 0], [0, 3.0 - 1.0, 2.0 - 3.0, 0, 0, 0]])
    assert torch.allclose(adv, want)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_a_loop_over_each_rows_response_tokens(gamma, lam):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    for b, (lo, hi) in enumerate([(2, 9), (1, 3), (4, 5), (3, 8)]):
        mask[b, lo:hi] = True
    rewards, values = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    adv, ret = pr.gae(rewards, values, mask, gamma, lam)
    want = _gae_loop(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, want, atol=1e-6)
    assert torch.allclose(ret, torch.where(mask, want + values, torch.zeros_like(values)), atol=1e-6)


def test_gae_ignores_what_lies_outside_the_mask():
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    noisy_r, noisy_v = rewards.clone(), values.clone()
    noisy_r[~MASK], noisy_v[~MASK] = 100.0, -100.0
    a1, r1 = pr.gae(rewards, values, MASK)
    a2, r2 = pr.gae(noisy_r, noisy_v, MASK)
    assert torch.equal(a1, a2) and torch.equal(r1, r2)
    assert (a1[~MASK] == 0).all()


def test_whiten_gives_mean_zero_and_std_one_over_the_mask():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, generator=g) * 3 + 2
    w = pr.whiten(x, MASK)
    assert abs(w[MASK].mean().item()) < 1e-6
    assert abs(w[MASK].std(unbiased=False).item() - 1) < 1e-5
    assert (w[~MASK] == 0).all()


# --------------------------------------------------------------------------- the losses


def test_policy_loss_at_ratio_one_is_minus_the_mean_advantage_with_the_policy_gradient():
    adv = torch.tensor([[0, 0, 1.0, -2.0, 0.5, 7], [0, 3.0, -1.0, 7, 7, 7]])
    old = torch.full((2, 6), -1.0)
    logp = old.clone().requires_grad_(True)
    loss = pr.policy_loss(logp, old, adv, MASK, clip_eps=0.2)
    assert math.isclose(loss.item(), -(1 - 2 + 0.5 + 3 - 1) / 5, rel_tol=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, torch.where(MASK, -adv / 5, torch.zeros_like(adv)))


def test_policy_loss_clips_only_where_the_ratio_has_moved_past_epsilon_in_the_advantages_direction():
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    logp = ratio.log().requires_grad_(True)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss = pr.policy_loss(logp, torch.zeros(1, 4), adv, mask, clip_eps=0.2)
    # per token −min(ρA, clip(ρ)A): −1.2 (clipped), −0.5, +1.5, +0.8 (clipped); mean 0.15
    assert math.isclose(loss.item(), 0.15, rel_tol=1e-6)
    loss.backward()
    # clipped tokens give no gradient; the others −A ρ / N
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5 / 4, 1.5 / 4, 0.0]]))


def test_value_loss_clips_around_the_old_value_and_keeps_the_larger_error():
    values = torch.tensor([[2.0, 0.1, -1.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 5.0]])
    loss = pr.value_loss(values, old, returns, torch.tensor([[True, True, False]]), clip_eps=0.5)
    # token 0: (2−1)² vs (0.5−1)² -> 1; token 1: (0.1−1)² = 0.81 vs the same (inside the clip); ½ mean = 0.4525
    assert math.isclose(loss.item(), 0.4525, rel_tol=1e-6)
    loss.backward()
    assert torch.allclose(values.grad, torch.tensor([[0.5, 0.5 * -0.9, 0.0]]))


def test_value_loss_without_clipping_is_half_the_masked_mse():
    g = torch.Generator().manual_seed(4)
    v, old, ret = (torch.randn(2, 6, generator=g) for _ in range(3))
    got = pr.value_loss(v, old, ret, MASK, clip_eps=1e9)
    assert torch.allclose(got, 0.5 * ((v - ret) ** 2)[MASK].mean())


def test_explained_variance():
    g = torch.Generator().manual_seed(5)
    ret = torch.randn(2, 6, generator=g)
    assert math.isclose(pr.explained_variance(ret, ret, MASK), 1.0)
    mean = torch.full_like(ret, ret[MASK].mean().item())
    assert abs(pr.explained_variance(mean, ret, MASK)) < 1e-6
    assert math.isnan(pr.explained_variance(ret, torch.ones(2, 6), MASK))


def test_tokens_to_end_counts_the_response_tokens_after_each_one():
    got = pr.tokens_to_end(MASK)
    assert got.tolist() == [[-1, -1, 2, 1, 0, -1], [-1, 1, 0, -1, -1, -1]]
    assert torch.equal(got == 0, torch.nn.functional.one_hot(pr.last_response_column(MASK), MASK.size(1)).bool())


def test_entropy_of_a_uniform_distribution_is_log_v():
    assert torch.allclose(pr.entropy_from_logits(torch.zeros(3, 8)), torch.full((3,), math.log(8)))


# --------------------------------------------------------------------------- models and the loop


def test_token_values_are_the_critics_numbers_at_the_positions_that_choose_each_token():
    critic = RewardModel(tiny_gpt())
    torch.nn.init.normal_(critic.head.weight)
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(6))
    assert torch.allclose(pr.token_values(critic, ids), critic.values(ids)[:, :-1], atol=1e-6)


def test_make_reference_is_a_frozen_copy_and_make_critic_a_trainable_one():
    base = tiny_gpt()
    ref = pr.make_reference(base)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    assert all(p.requires_grad for p in base.parameters())
    rm = RewardModel(tiny_gpt()).requires_grad_(False)
    critic = pr.make_critic(rm)
    assert all(p.requires_grad for p in critic.parameters())
    assert critic.head.weight.data_ptr() != rm.head.weight.data_ptr()


def test_memory_footprint_counts_16_bytes_per_trained_parameter_as_the_zero_paper_does():
    # mixed precision: 2 (bf16 weights) + 2 (bf16 gradients) + 4 (fp32 master weights) + 4 + 4 (Adam moments)
    assert pr.memory_footprint(10) == 160
    assert pr.memory_footprint(10, trainable=False) == 20
    # float32: 4 + 4 + 8, no separate master copy
    assert pr.memory_footprint(10, bytes_per_param=4) == 160
    assert pr.memory_footprint(10, bytes_per_param=4, trainable=False) == 40


@pytest.fixture(scope="module")
def short_run():
    from llmcourse.checkpoint import load_base_model
    from llmcourse.runtime import torch_threads
    from llmcourse.reward_model import load_reward_model

    with torch_threads(1):
        base, rm = load_base_model(), load_reward_model()
        actor, critic = copy.deepcopy(base), pr.make_critic(rm)
        rm_before = copy.deepcopy(rm.state_dict())
        calls = []
        cfg = pr.PPOConfig(rollouts=2, prompts_per_rollout=8, ppo_epochs=2, minibatches=2, eval_every=1, seed=0)
        history = pr.train_ppo(actor, critic, rm, cfg, on_eval=lambda u, m: calls.append(u))
    return dict(base=base, actor=actor, critic=critic, rm=rm, rm_before=rm_before, history=history, calls=calls)


def test_train_ppo_reports_every_signal_once_per_rollout(short_run):
    h = short_run["history"]
    for key in pr.HISTORY_KEYS:
        assert len(h[key]) == 2, key
    assert h["seconds"][0] > 0
    assert short_run["calls"] == [0, 1, 2]
    assert h["kl"][0] == pytest.approx(0.0, abs=1e-5)        # the first rollout comes from the reference itself
    assert 0 <= h["clip_fraction"][0] <= 1 and h["entropy"][0] > 0 and h["response_length"][0] >= 1
    assert h["approx_kl"][0] >= 0                             # k3 of the ratio: never negative


def test_train_ppo_trains_actor_and_critic_and_leaves_the_reward_model_alone(short_run):
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert changed(short_run["actor"], short_run["base"])
    assert not changed(short_run["rm"], short_run["rm"]) and all(
        torch.equal(v, short_run["rm_before"][k]) for k, v in short_run["rm"].state_dict().items())
    assert any(not torch.equal(v, short_run["rm_before"][k]) for k, v in short_run["critic"].state_dict().items())
