"""GRPO's clipped surrogate, aggregation variants and loss against hand-worked values, and the training loop on a
few tiny batches. (TRL's own GRPOTrainer is the oracle in test_oracle_trl.py.)"""

import functools
import math

import pytest
import torch

from llmcourse import grpo, kl
from llmcourse.checkpoint import load_base_model


def _log(*ratios: float) -> torch.Tensor:
    return torch.log(torch.tensor(ratios))


# --------------------------------------------------------------------------- the clipped surrogate


def test_surrogate_by_hand_on_each_side_of_the_clip():
    # ε = 0.2. A > 0: a ratio above 1.2 earns no more (clipped); below it counts as it is.
    # A < 0: a ratio below 0.8 is clipped (the loss stops falling); above 1.2 it is not (min keeps the worse term).
    logp = torch.stack([_log(1.5, 0.5, 1.1), _log(1.5, 0.5, 0.9)])     # (2, 3), old log-probs 0: ratio = π
    out = grpo.clipped_surrogate(logp, torch.zeros(2, 3), torch.tensor([2.0, -1.0]))
    expected = torch.tensor([[-2 * 1.2, -2 * 0.5, -2 * 1.1],
                             [1.5, 0.8, 0.9]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_clip_higher_widens_only_the_upper_side():
    # DAPO: ε_low = 0.2, ε_high = 0.28. A ratio of 1.25 with A > 0 is no longer clipped; 0.75 with A < 0 still is.
    out = grpo.clipped_surrogate(torch.stack([_log(1.25), _log(0.75)]), torch.zeros(2, 1), torch.tensor([1.0, -1.0]),
                                 eps_low=0.2, eps_high=0.28)
    assert torch.allclose(out, torch.tensor([[-1.25], [0.8]]), atol=1e-6)


def test_at_ratio_one_the_gradient_is_the_policy_gradient():
    # One step per batch (μ = 1): π_old = π_θ, the ratio is 1 and ∂ℓ/∂log π = −A for every token (REINFORCE
    # with the group mean as baseline, DeepSeekMath eq. 21's gradient coefficient).
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([0.7, -1.3])
    grpo.clipped_surrogate(logp, logp.detach(), adv).sum().backward()
    assert torch.allclose(logp.grad, -adv.unsqueeze(1).expand(2, 2))


def test_clipped_tokens_get_no_gradient_and_the_old_logprobs_none():
    logp = _log(1.5, 1.5, 0.5, 0.5).view(2, 2).clone().requires_grad_(True)   # ratios (1.5, 1.5), (0.5, 0.5)
    old = torch.zeros(2, 2, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    grpo.clipped_surrogate(logp, old, adv).sum().backward()
    assert torch.equal(logp.grad, torch.zeros(2, 2))                  # both rows are past the clip on their side
    assert old.grad is None
    logp2 = _log(1.5, 0.5).view(2, 1).clone().requires_grad_(True)
    grpo.clipped_surrogate(logp2, torch.zeros(2, 1), torch.tensor([-1.0, 1.0])).sum().backward()
    assert torch.allclose(logp2.grad, torch.tensor([[1.5], [-0.5]]))  # not clipped: −A · ratio


# --------------------------------------------------------------------------- RLOO and GSPO


def test_rloo_advantages_by_hand():
    # G = 4, rewards (1.1, 0, 0.1, 1): each minus the mean of the other three
    adv = grpo.rloo_advantages(torch.tensor([1.1, 0.0, 0.1, 1.0]), n_samples=4)
    assert torch.allclose(adv, torch.tensor([1.1 - 1.1 / 3, 0.0 - 2.2 / 3, 0.1 - 2.1 / 3, 1.0 - 1.2 / 3]))
    # = G/(G − 1) · (r − mean): GRPO's centring, rescaled, no std
    r = torch.tensor([1.1, 0.0, 0.1, 1.0, 0.0, 0.0, 1.0, 1.1])
    assert torch.allclose(grpo.rloo_advantages(r, 4), 4 / 3 * grpo.group_advantages(r, 4, scale=False), atol=1e-6)
    assert torch.equal(grpo.rloo_advantages(torch.tensor([1.1] * 3 + [0.1] * 3), 3), torch.zeros(6))
    with pytest.raises(ValueError):
        grpo.rloo_advantages(torch.zeros(5), 2)


def _gspo_by_the_paper(logp, old, adv, mask, eps_low, eps_high):
    """GSPO's objective as written (Zheng et al. 2025, eq. 5): one ratio per response, one loss per response."""
    s = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1))          # (B,): the geometric mean of token ratios
    return (-torch.min(s * adv, torch.clamp(s, 1 - eps_low, 1 + eps_high) * adv)).mean()


def test_sequence_surrogate_by_hand_and_against_the_papers_form():
    # response 0: log-ratios (0.2, 0.0) -> s = e^0.1; response 1: (0.4), masked 9 -> s = e^0.4
    logp = torch.tensor([[0.2, 0.0], [0.4, 9.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -1.0])
    per_token = grpo.sequence_clipped_surrogate(logp, torch.zeros(2, 2), adv, 0.2, 0.2, mask=mask)
    assert torch.allclose(per_token[mask], torch.tensor([-math.exp(0.1)] * 2 + [math.exp(0.4)]))
    grpo.aggregate(per_token, mask, "sequence").backward()
    # ∂/∂logp_t of mean_i(−s_i A_i) = −A_i s_i / (B |o_i|): (−e^0.1/4, −e^0.1/4), (+e^0.4/2)
    assert torch.allclose(logp.grad, torch.tensor([[-math.exp(0.1) / 4] * 2, [math.exp(0.4) / 2, 0.0]]))
    g = torch.Generator().manual_seed(0)
    lp, old = -torch.rand(5, 7, generator=g), -torch.rand(5, 7, generator=g)
    m, a = torch.rand(5, 7, generator=g) > 0.3, torch.randn(5, generator=g)
    m[:, 0] = True
    for eps in ((3e-4, 4e-4), (0.2, 0.2)):                           # most responses clipped, then few
        x = lp.clone().requires_grad_(True)
        ours = grpo.aggregate(grpo.sequence_clipped_surrogate(x, old, a, *eps, mask=m), m, "sequence")
        (g_ours,) = torch.autograd.grad(ours, x)
        y = lp.clone().requires_grad_(True)
        paper = _gspo_by_the_paper(y, old, a, m.float(), *eps)
        (g_paper,) = torch.autograd.grad(paper, y)
        assert torch.allclose(ours, paper, atol=1e-6) and torch.allclose(g_ours, g_paper, atol=1e-6)


def test_at_ratio_one_gspo_and_grpo_give_the_same_gradient():
    # μ = 1: s_i = 1 and each token's ratio is 1, so GSPO's step is GRPO's per-sequence step
    g = torch.Generator().manual_seed(2)
    lp, m, a = -torch.rand(4, 6, generator=g), torch.rand(4, 6, generator=g) > 0.2, torch.randn(4, generator=g)
    grads = []
    for surrogate in (grpo.clipped_surrogate, functools.partial(grpo.sequence_clipped_surrogate, mask=m)):
        x = lp.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(grpo.aggregate(surrogate(x, x.detach(), a, 0.2, 0.2), m), x)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_clip_fraction_per_sequence_counts_whole_responses():
    logp = torch.tensor([[0.5, 0.0], [0.1, 0.1]])                      # s = e^0.25 (clipped, A > 0), e^0.1 (not)
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert grpo.clip_fraction(logp, torch.zeros(2, 2), torch.ones(2), mask, 0.2, 0.2, "sequence") == 0.5
    assert grpo.clip_fraction(logp, torch.zeros(2, 2), torch.ones(2), mask, 0.2, 0.2) == 0.25


# --------------------------------------------------------------------------- aggregation


MASK = torch.tensor([[True, False, False, False], [True, True, True, False]])


def test_aggregations_by_hand():
    x = torch.tensor([[4.0, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 9.0]])     # the 9s are not response tokens
    assert math.isclose(grpo.aggregate(x, MASK, "sequence").item(), (4 + 2) / 2)
    assert math.isclose(grpo.aggregate(x, MASK, "token").item(), (4 + 1 + 2 + 3) / 4)
    assert math.isclose(grpo.aggregate(x, MASK, "dr_grpo", max_len=5).item(), (4 + 1 + 2 + 3) / (2 * 5))


def test_each_aggregation_weighs_a_token_as_the_papers_say():
    # ∂L/∂ℓ_{i,t}: GRPO 1/(B·|o_i|) (a long response's tokens weigh less: the length bias Dr. GRPO removes);
    # DAPO 1/(number of tokens in the batch); Dr. GRPO 1/(B · max_len), the same for every token.
    for mode, expected in [("sequence", [1 / 2, 1 / 6, 1 / 6, 1 / 6]), ("token", [1 / 4] * 4),
                           ("dr_grpo", [1 / 16] * 4)]:
        x = torch.zeros(2, 4, requires_grad=True)
        grpo.aggregate(x, MASK, mode, max_len=8).backward()
        assert torch.allclose(x.grad[MASK], torch.tensor(expected)), mode
        assert torch.equal(x.grad[~MASK], torch.zeros(4)), mode


def test_masked_entries_cannot_leak_in():
    x = torch.tensor([[1.0, float("nan"), float("inf"), 0.0], [1.0, 1.0, 1.0, float("-inf")]])
    for mode in grpo.AGGREGATIONS:
        assert torch.isfinite(grpo.aggregate(x, MASK, mode, max_len=4))


def test_dr_grpo_needs_max_len_and_unknown_modes_fail():
    with pytest.raises(ValueError, match="max_len"):
        grpo.aggregate(torch.zeros(2, 4), MASK, "dr_grpo")
    with pytest.raises(ValueError, match="unknown mode"):
        grpo.aggregate(torch.zeros(2, 4), MASK, "mean")


# --------------------------------------------------------------------------- the whole loss


def test_kl_term_is_zero_at_the_reference_and_sends_no_gradient_to_it():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = logp.detach().clone().requires_grad_(True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.tensor([0.5])
    with_kl = grpo.grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.1)
    assert torch.equal(with_kl, grpo.grpo_loss(logp, logp.detach(), None, adv, mask, beta=0.0))
    with_kl.backward()
    assert ref.grad is None


def test_ratio_corrected_kl_term_by_hand():
    # one token, ratio π_θ/π_old = 1.5, π_ref/π_θ = 0.5: k3 = −0.5 + log 2; the term is 1.5 · k3, and
    # ∂/∂log π of ρ k3 is ρ (k3 + 1 − r) = 1.5 (log 2 + 0.5 − 0.5 + … ) = 1.5 · log 2 (= ρ · k1)
    logp = torch.tensor([[math.log(0.6)]], requires_grad=True)
    old, ref = torch.tensor([[math.log(0.4)]]), torch.tensor([[math.log(0.3)]])
    mask, adv = torch.ones(1, 1, dtype=torch.bool), torch.tensor([0.0])
    loss = grpo.grpo_loss(logp, old, ref, adv, mask, beta=1.0, kl_ratio=True)
    assert math.isclose(loss.item(), 1.5 * (-0.5 + math.log(2)), rel_tol=1e-6)
    loss.backward()
    assert math.isclose(logp.grad.item(), 1.5 * math.log(2), rel_tol=1e-6)
    plain = grpo.grpo_loss(logp.detach(), old, ref, adv, mask, beta=1.0)
    assert math.isclose(plain.item(), -0.5 + math.log(2), rel_tol=1e-6)


def test_kl_penalized_rewards_by_hand():
    logp = torch.tensor([[-1.0, -1.0, -9.0], [-2.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.25, 0.0], [-1.5, 0.0, 0.0]])          # k1 = (0.5, 0.25, ·) and (−0.5, ·, ·)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = grpo.kl_penalized_rewards(torch.tensor([1.0, 0.0]), logp, ref, mask, beta=0.4)
    assert torch.allclose(out, torch.tensor([1.0 - 0.4 * 0.75, 0.0 + 0.4 * 0.5]))
    k3 = grpo.kl_penalized_rewards(torch.tensor([1.0, 0.0]), logp, ref, mask, 0.4, kl.k3)
    assert torch.allclose(k3, torch.tensor([1 - 0.4 * (math.exp(-0.5) - 1 + 0.5 + math.exp(-0.25) - 1 + 0.25),
                                            -0.4 * (math.exp(0.5) - 1 - 0.5)]))
    logp.requires_grad_(True)
    assert not grpo.kl_penalized_rewards(torch.zeros(2), logp, ref, mask, 0.4).requires_grad   # a constant


def test_clip_fraction_counts_only_tokens_whose_gradient_is_clipped():
    logp = torch.stack([_log(1.5, 0.5, 1.0), _log(1.5, 0.5, 1.0)])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # row 0 (A > 0): only 1.5 is clipped; row 1 (A < 0): only 0.5. 2 of 5 kept tokens.
    assert grpo.clip_fraction(logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask) == pytest.approx(0.4)


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def base():
    return load_base_model()


TINY = dict(updates=2, prompts_per_update=4, samples_per_prompt=4, seed=0)


def test_train_grpo_history_and_evaluation_calls(base):
    import copy
    model, seen = copy.deepcopy(base), []
    h = grpo.train_grpo(model, grpo.GRPOConfig(**TINY), on_eval=lambda u, m: seen.append(u))
    assert seen == [0, 2]
    for key in ("reward", "accuracy", "format_rate", "reasoned", "length", "kl", "entropy", "clip_fraction",
                "zero_groups", "loss"):
        assert len(h[key]) == 2, key
    assert h["kl"][0] == 0.0                                           # the first batch is scored before any step
    assert h["clip_fraction"] == [0.0, 0.0]                            # μ = 1: the ratio is exactly 1
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))


def test_train_grpo_runs_every_variant_and_calls_the_learners_functions(base):
    import copy
    calls = {"surrogate": 0, "aggregate": 0, "kl": 0, "advantages": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    from llmcourse.grpo import group_advantages
    for variant in (dict(aggregation="token", scale_rewards=False, beta=0.0), dict(aggregation="dr_grpo", epochs=2)):
        h = grpo.train_grpo(copy.deepcopy(base), grpo.GRPOConfig(**TINY, **variant),
                            surrogate_fn=counted("surrogate", grpo.clipped_surrogate),
                            aggregate_fn=counted("aggregate", grpo.aggregate), kl_fn=counted("kl", kl.k3),
                            advantage_fn=counted("advantages", group_advantages))
        assert all(math.isfinite(x) for x in h["loss"])
    # the KL estimator: once per update to log it, and in the loss of every step when β > 0 (the recipe's 0.04)
    assert calls == {"surrogate": 2 + 4, "aggregate": 2 + 4, "kl": 2 + 2 * (1 + 2), "advantages": 4}


@pytest.mark.parametrize("estimator,place", [("k2", "loss"), ("k3_ratio", "loss"), ("k1", "reward"), ("k1", "loss")])
def test_train_grpo_puts_the_kl_where_the_config_says(base, estimator, place, monkeypatch):
    import copy
    seen = {"loss_beta": [], "kl_ratio": [], "kl_fn": [], "rewards": []}
    real_loss, real_adv = grpo.grpo_loss, grpo.group_advantages

    def spy_loss(*args, **kwargs):
        seen["loss_beta"].append(args[5])
        seen["kl_fn"].append(args[11])
        seen["kl_ratio"].append(kwargs["kl_ratio"])
        return real_loss(*args, **kwargs)

    def spy_adv(rewards, n, scale=True):
        seen["rewards"].append(rewards)
        return real_adv(rewards, n, scale)
    monkeypatch.setattr(grpo, "grpo_loss", spy_loss)
    cfg = grpo.GRPOConfig(**TINY, beta=0.5, kl_estimator=estimator, kl_in=place)
    h = grpo.train_grpo(copy.deepcopy(base), cfg, advantage_fn=spy_adv)
    assert all(math.isfinite(x) for x in h["loss"])
    assert seen["kl_ratio"] == [estimator == "k3_ratio"] * 2
    assert seen["loss_beta"] == ([0.5] * 2 if place == "loss" else [0.0] * 2)
    assert seen["kl_fn"] == [kl.k3 if estimator == "k3_ratio" else kl.ESTIMATORS[estimator]] * 2
    rule = set().union(*({round(x, 4) for x in r.tolist()} for r in seen["rewards"]))
    if place == "reward":                                               # the KL moved the rewards off the rule values
        assert not rule <= {0.0, 0.1, 1.0, 1.1}
    else:
        assert rule <= {0.0, 0.1, 1.0, 1.1}


def test_the_entropy_is_the_sampling_policys_over_the_response_tokens(base):
    import copy
    from llmcourse.logprobs import masked_mean, target_mask
    from llmcourse.logprobs import entropy_from_logits
    from llmcourse.sampling import sample_responses
    from llmcourse import taskworld as tw
    cfg = grpo.GRPOConfig(**TINY)
    h = grpo.train_grpo(copy.deepcopy(base), cfg)
    # the first batch, sampled again the same way from the same model, scored by hand
    problems = tw.sample_problems(cfg.updates * cfg.prompts_per_update, seed=10_000 + cfg.seed)[:cfg.prompts_per_update]
    r = sample_responses(base, problems, cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        expected = masked_mean(entropy_from_logits(base(r.ids[:, :-1])), target_mask(r.response_mask)).item()
    assert h["entropy"][0] == pytest.approx(expected, rel=1e-5) and 0 < expected < math.log(base.cfg.vocab_size)


@pytest.mark.parametrize("variant", [dict(advantage="rloo", scale_rewards=False), dict(ratio_level="sequence", epochs=2)])
def test_train_grpo_runs_rloo_and_gspo(base, variant):
    import copy
    h = grpo.train_grpo(copy.deepcopy(base), grpo.GRPOConfig(**TINY, **variant))
    assert all(math.isfinite(x) for x in h["loss"])


def test_grpo_run_trains_a_fresh_base_model_with_the_seed(base):
    model, h = grpo.grpo_run(grpo.GRPOConfig(**TINY), seed=1)
    again, h2 = grpo.grpo_run(grpo.GRPOConfig(**{**TINY, "seed": 0}), seed=1)          # the seed argument wins
    assert h["reward"] == h2["reward"] and all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))


def test_train_grpo_rejects_unknown_kl_settings(base):
    for bad in (dict(kl_estimator="k4"), dict(kl_in="advantage"), dict(kl_estimator="k3_ratio", kl_in="reward"),
                dict(advantage="rloo"), dict(advantage="leave-one-out", scale_rewards=False), dict(ratio_level="seq")):
        with pytest.raises(ValueError):
            grpo.train_grpo(base, grpo.GRPOConfig(**TINY, **bad))


def test_groups_with_equal_rewards_give_no_gradient():
    # every group all right (1.1) or all wrong (0): advantages 0, the surrogate is 0 with zero gradient
    from llmcourse.grpo import group_advantages
    adv = group_advantages(torch.tensor([1.1] * 4 + [0.0] * 4), n_samples=4)
    logp = torch.randn(8, 6, requires_grad=True)
    loss = grpo.grpo_loss(logp, logp.detach(), None, adv, torch.ones(8, 6, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(8, 6))
