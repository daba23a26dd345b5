"""Policy-gradient pieces against hand-worked examples and known identities."""

import torch

from llmcourse.policy_gradient import (collect_episodes, gae, linear_softmax_policy, per_episode_gradients,
                                       reinforce_loss, rewards_to_go, score_function, time_baseline)


def test_rewards_to_go_hand_worked():
    # G_2 = 1, G_1 = 1 + 0.5·1 = 1.5, G_0 = 1 + 0.5·1.5 = 1.75
    assert torch.allclose(rewards_to_go(torch.tensor([1.0, 1.0, 1.0]), 0.5), torch.tensor([1.75, 1.5, 1.0]))


def test_rewards_to_go_first_entry_is_the_discounted_return():
    r = torch.tensor([0.3, -1.0, 2.0, 0.0, 5.0], dtype=torch.float64)
    expected = sum(0.9 ** k * r[k] for k in range(5))
    assert torch.isclose(rewards_to_go(r, 0.9)[0], expected)


def test_reinforce_loss_gradient_is_minus_advantage_over_batch():
    log_probs = torch.log(torch.tensor([0.5, 0.25, 0.8])).requires_grad_(True)
    adv = torch.tensor([2.0, -1.0, 0.5])
    reinforce_loss(log_probs, adv).backward()
    assert torch.allclose(log_probs.grad, -adv / 3)


def test_reinforce_loss_sends_no_gradient_into_the_advantages():
    adv = torch.tensor([1.0, -2.0], requires_grad=True)
    reinforce_loss(torch.log(torch.tensor([0.5, 0.5], requires_grad=True)), adv * 1.0).backward()
    assert adv.grad is None


def _case(T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, generator=g, dtype=torch.float64), torch.randn(T, generator=g, dtype=torch.float64),
            torch.randn((), generator=g, dtype=torch.float64))


def test_gae_with_lambda_0_is_the_td_error():
    r, v, last = _case()
    dones = torch.zeros(7, dtype=torch.float64)
    next_v = torch.cat([v[1:], last[None]])
    assert torch.allclose(gae(r, v, dones, last, 0.9, 0.0), r + 0.9 * next_v - v)


def test_gae_with_lambda_1_is_the_monte_carlo_advantage():
    r, v, last = _case()
    dones = torch.zeros(7, dtype=torch.float64)
    dones[-1] = 1.0  # the episode ends with the rollout: G_t is the plain discounted return
    assert torch.allclose(gae(r, v, dones, last, 0.9, 1.0), rewards_to_go(r, 0.9) - v)


def test_gae_with_lambda_1_bootstraps_from_last_value_when_cut():
    r, v, last = _case()
    dones = torch.zeros(7, dtype=torch.float64)
    g = rewards_to_go(torch.cat([r, last[None]]), 0.9)[:-1]  # the last value stands in for the future
    assert torch.allclose(gae(r, v, dones, last, 0.9, 1.0), g - v)


def test_gae_resets_at_done():
    r, v, last = _case(T=8)
    dones = torch.zeros(8, dtype=torch.float64)
    dones[3] = 1.0
    both = gae(r, v, dones, last, 0.95, 0.9)
    first = gae(r[:4], v[:4], dones[:4], torch.tensor(123.0, dtype=torch.float64), 0.95, 0.9)
    second = gae(r[4:], v[4:], dones[4:], last, 0.95, 0.9)
    assert torch.allclose(both, torch.cat([first, second]))


def test_gae_hand_worked():
    # δ_1 = 1 − 0 (episode ends), δ_0 = 1 + 0.5·0 − 0 = 1; A_1 = 1, A_0 = 1 + 0.5·1·1 = 1.5
    out = gae(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor(5.0), 0.5, 1.0)
    assert torch.allclose(out, torch.tensor([1.5, 1.0]))


def test_gae_batched_equals_one_environment_at_a_time():
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    dones, last = (torch.rand(9, 4, generator=g) < 0.3).float(), torch.randn(4, generator=g)
    batched = gae(r, v, dones, last, 0.99, 0.95)
    for i in range(4):
        assert torch.allclose(batched[:, i], gae(r[:, i], v[:, i], dones[:, i], last[i], 0.99, 0.95))


def test_score_function_matches_autograd():
    theta = linear_softmax_policy(seed=3)
    obs, actions = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    for t in range(5):
        th = theta.clone().requires_grad_(True)
        feats = torch.cat([obs[t], torch.ones(1, dtype=torch.float64)])
        torch.log_softmax(feats @ th, 0)[actions[t]].backward()
        assert torch.allclose(score_function(theta, obs, actions)[t], th.grad.flatten())


def test_baseline_keeps_the_mean_and_cuts_the_variance():
    theta = linear_softmax_policy(seed=0)
    baseline = time_baseline(collect_episodes(theta, 100, seed=1000), 0.99)
    episodes = collect_episodes(theta, 300, seed=0)
    plain = per_episode_gradients(theta, episodes, 0.99, "to-go")
    based = per_episode_gradients(theta, episodes, 0.99, "baseline", baseline)
    assert based.var(0).sum() < 0.5 * plain.var(0).sum()
    stderr = (plain.var(0) / len(episodes)).sqrt()
    assert ((plain.mean(0) - based.mean(0)).abs() < 4 * stderr + 1e-9).all()
