"""KL estimators k1, k2, k3 (Schulman, "Approximating KL divergence", 2020) against their oracles.

Oracles: numbers worked by hand; the exact KL of small categorical distributions (and torch's
own `kl_divergence` for it); exact expectations Σ_y π(y) k(y); Monte Carlo means with their
sampling error; and per-token values of OpenRLHF's k2, (logp − ref)²/2, evaluated once and
written down below. (k1 and k3 against TRL's own code: test_oracle_trl.py.)

Used as a loss, an estimator acts through its gradient, and the oracle there is autograd's exact
gradient of `categorical_kl` in either direction (Tang & Munos 2025, "On a few pitfalls in KL
divergence gradient estimation for RL"; Shah et al. 2025, "A Comedy of Estimators"): the expected
gradients are computed exactly (every token weighed by its probability), and once by Monte Carlo
through a model's sampled tokens and `grpo_loss`.
"""

import doctest
import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from llmcourse import grpo, kl
from llmcourse.kl import (ESTIMATORS, PLACEMENTS, categorical_kl, expected_gradient, importance_weighted, k1, k2, k3,
                          per_token_kl)
from llmcourse.logprobs import masked_mean, target_mask, token_logprobs
from llmcourse.model import GPT, GPTConfig
from llmcourse.runtime import torch_threads
from llmcourse.sampling import sample_responses


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --------------------------------------------------------------------------- hand-worked and library values

def test_hand_worked_values():
    # π(y) = 0.5, π_ref(y) = 0.25: r = 1/2;  π(y) = 0.2, π_ref(y) = 0.6: r = 3
    logp, ref_logp = torch.tensor([0.5, 0.2]).log(), torch.tensor([0.25, 0.6]).log()
    ln2, ln3 = math.log(2), math.log(3)
    assert torch.allclose(k1(logp, ref_logp), torch.tensor([ln2, -ln3]))
    assert torch.allclose(k2(logp, ref_logp), torch.tensor([ln2**2 / 2, ln3**2 / 2]))
    assert torch.allclose(k3(logp, ref_logp), torch.tensor([-0.5 + ln2, 2 - ln3]))


LOGP = torch.tensor([-0.1, -2.3, -0.7, -5.0, -1.2], dtype=torch.float64)
REF_LOGP = torch.tensor([-0.3, -1.1, -0.7, -2.0, -4.2], dtype=torch.float64)
OPENRLHF_K2 = [0.02, 0.72, 0.0, 4.5, 4.5]


def test_k2_values_match_openrlhfs_formula():
    assert torch.allclose(k2(LOGP, REF_LOGP), torch.tensor(OPENRLHF_K2, dtype=torch.float64), atol=1e-10)


def test_the_argument_order_matters():
    # k1 and k3 are not symmetric: swapping policy and reference gives other numbers
    assert not torch.allclose(k3(REF_LOGP, LOGP), k3(LOGP, REF_LOGP))
    assert torch.allclose(k1(REF_LOGP, LOGP), -k1(LOGP, REF_LOGP))


def test_shapes_dtypes_and_names():
    logp, ref_logp = -torch.rand(4, 7), -torch.rand(4, 7)
    for name, fn in ESTIMATORS.items():
        out = fn(logp, ref_logp)
        assert out.shape == (4, 7) and out.dtype == torch.float32
        assert torch.equal(per_token_kl(logp, ref_logp, name), out)
        assert torch.equal(fn(logp, logp), torch.zeros(4, 7))           # no divergence from itself
    assert torch.equal(per_token_kl(logp, ref_logp), k3(logp, ref_logp))   # k3 by default
    with pytest.raises(ValueError, match="unknown KL estimator"):
        per_token_kl(logp, ref_logp, "k4")


def test_k3_gradient_is_one_minus_r():
    # as a loss term (GRPO), d k3 / d log π = 1 − r: it pulls log π down where π > π_ref
    logp = torch.tensor([0.5, 0.2]).log().requires_grad_()
    k3(logp, torch.tensor([0.25, 0.6]).log()).sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([1 - 0.5, 1 - 3.0]))


def test_categorical_kl_by_hand_and_against_torch():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    assert math.isclose(float(categorical_kl(p.log(), q.log())), 0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel_tol=1e-6)
    logits_p, logits_q = torch.randn(3, 5, 11), torch.randn(3, 5, 11) * 2 + 1   # unnormalised logits
    expected = kl_divergence(Categorical(logits=logits_p), Categorical(logits=logits_q))   # (3, 5)
    assert torch.allclose(categorical_kl(logits_p, logits_q), expected, atol=1e-6)
    assert torch.allclose(categorical_kl(logits_p, logits_p), torch.zeros(3, 5), atol=1e-6)
    # a token that p never picks adds nothing (no NaN from 0 · log 0)
    zero = torch.tensor([0.0, 0.5, 0.5]).log()
    assert math.isclose(float(categorical_kl(zero, torch.tensor([0.2, 0.4, 0.4]).log())), math.log(1.25), rel_tol=1e-6)


# --------------------------------------------------------------------------- unbiasedness

def pair(scale: float, seed: int = 0, V: int = 6):
    """Log-probs of a policy π and a reference π_ref over V tokens; ``scale`` sets how far apart."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(V, generator=g, dtype=torch.float64)
    ref_logits = logits + scale * torch.randn(V, generator=g, dtype=torch.float64)
    return torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_k1_and_k3_are_exactly_unbiased_in_expectation(scale):
    logp, ref_logp = pair(scale)                                        # (V,): every token's log-prob
    exact = float(categorical_kl(logp, ref_logp))
    for estimator in (k1, k3):
        assert math.isclose(float((logp.exp() * estimator(logp, ref_logp)).sum()), exact, rel_tol=1e-12)


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_monte_carlo_means_of_k1_and_k3_match_the_exact_kl(scale):
    logp, ref_logp = pair(scale)
    exact = float(categorical_kl(logp, ref_logp))
    n = 100_000
    y = torch.multinomial(logp.exp(), n, replacement=True, generator=torch.Generator().manual_seed(1))   # (n,) ~ π
    samples = {name: fn(logp[y], ref_logp[y]) for name, fn in ESTIMATORS.items()}                     # each (n,)
    for name in ("k1", "k3"):
        s = samples[name]
        stderr = float(s.std()) / math.sqrt(n)
        assert abs(float(s.mean()) - exact) < 4 * stderr, name
    assert (samples["k3"] >= 0).all() and (samples["k1"] < 0).any()  # k3 never negative; k1 often is
    if scale == 0.1:
        # close distributions: k3 has far less variance than k1, and k2 is nearly unbiased
        assert samples["k3"].std() < 0.2 * samples["k1"].std()
        assert abs(float(samples["k2"].mean()) - exact) < 0.05 * exact
    else:
        # far apart, k2 is biased well beyond the sampling error
        k2s = samples["k2"]
        assert abs(float(k2s.mean()) - exact) > 10 * float(k2s.std()) / math.sqrt(n)


def test_k3_and_k2_are_never_negative_up_to_rounding():
    log_ratio = torch.linspace(-30, 30, 10_001, dtype=torch.float64)    # r from 1e-13 to 1e13
    zeros = torch.zeros_like(log_ratio)
    assert (k2(zeros, log_ratio) >= 0).all()
    assert (k3(zeros, log_ratio) >= -1e-15).all()                       # exp(x) − 1 − x rounds near x = 0
    assert (k3(zeros, log_ratio)[log_ratio.abs() > 1e-4] > 0).all()
    assert k3(torch.tensor(-1.7), torch.tensor(-1.7)) == 0              # r = 1 exactly: 0 exactly


# --------------------------------------------------------------------------- on a model's responses

def test_estimates_over_sampled_responses_match_the_exact_per_token_kl():
    """Per token, E[k | prefix] is the exact KL of the next-token distributions at that prefix."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=360, block_size=16, n_layer=1, n_embd=32, n_head=2)
    policy, ref = GPT(cfg).eval(), GPT(cfg).eval()
    with torch.no_grad():
        for p, q in zip(policy.parameters(), ref.parameters()):
            p.copy_(q + 0.5 * torch.randn_like(q))                       # a policy that moved away from ref
        prompts = torch.randint(0, 352, (64, 3), generator=torch.Generator().manual_seed(0)).tolist()
        r = sample_responses(policy, prompts, n_samples=16, max_new_tokens=6, temperature=1.0,
                             generator=torch.Generator().manual_seed(0))
        mask = target_mask(r.response_mask)                             # (B, T-1)
        logp, ref_logp = token_logprobs(policy, r.ids), token_logprobs(ref, r.ids)   # (B, T-1) each
        exact = categorical_kl(policy(r.ids[:, :-1]), ref(r.ids[:, :-1]))            # (B, T-1)
    n = int(mask.sum())
    for name in ("k1", "k3"):
        diff = per_token_kl(logp, ref_logp, name) - exact               # mean 0 given each prefix
        stderr = float(diff[mask].std()) / math.sqrt(n)
        assert abs(float(masked_mean(diff, mask))) < 4 * stderr, name
    assert float(masked_mean(exact, mask)) > 0.05                       # the check has something to find


# --------------------------------------------------------------------------- used as a loss: the gradients

def exact_gradients(logits, ref_logits):
    """Autograd's gradients of the exact reverse KL(π ‖ π_ref) and forward KL(π_ref ‖ π) w.r.t. π's logits."""
    x = logits.detach().clone().requires_grad_(True)
    (reverse,) = torch.autograd.grad(categorical_kl(x, ref_logits), x)
    (forward,) = torch.autograd.grad(categorical_kl(ref_logits, x), x)
    return reverse, forward


@pytest.mark.parametrize("scale,seed", [(0.3, 0), (1.0, 1), (2.0, 2)])
def test_what_each_estimator_does_as_a_loss_exactly(scale, seed):
    logp, ref_logp = pair(scale, seed, V=7)                             # (V,) float64 each
    reverse, forward = exact_gradients(logp, ref_logp)
    assert (reverse - forward).norm() > 0.05 * reverse.norm()           # the two directions differ here
    expected = {"k1 in the loss": torch.zeros_like(reverse),            # E[∇log π] = 0: it does nothing
                "k2 in the loss": reverse,
                "k3 in the loss": forward,                              # the forward KL, not the one the objective names
                "k3 × ratio in the loss": reverse,                      # DeepSeek-V3.2's correction
                "k1 in the reward": reverse,                            # chapter 09's PPO
                "k3 in the reward": reverse - forward}                  # biased
    assert set(expected) == set(PLACEMENTS)
    for placement, target in expected.items():
        assert torch.allclose(expected_gradient(logp, ref_logp, PLACEMENTS[placement]), target, atol=1e-12), placement
    # k1 and k3 have the same expected value, the KL, and different expected gradients
    assert math.isclose(float((logp.exp() * k1(logp, ref_logp)).sum()), float((logp.exp() * k3(logp, ref_logp)).sum()))


def test_the_expected_gradients_by_hand():
    # π = (½, ½), π_ref = (¾, ¼). ∂KL(π‖π_ref)/∂z_j = π_j (log(π_j/π_ref,j) − KL); ∂KL(π_ref‖π)/∂z_j = π_j − π_ref,j
    logits, ref_logits = torch.zeros(2, dtype=torch.float64), torch.tensor([0.75, 0.25], dtype=torch.float64).log()
    q = math.log(3) / 4
    assert torch.allclose(expected_gradient(logits, ref_logits, k2), torch.tensor([-q, q], dtype=torch.float64))
    assert torch.allclose(expected_gradient(logits, ref_logits, k3), torch.tensor([-0.25, 0.25], dtype=torch.float64))
    assert torch.equal(expected_gradient(logits, ref_logits, k1).abs(), torch.zeros(2, dtype=torch.float64))
    # in the reward, k1's advantage −k1 = (log(3/2), −log 2) weighs the score: E = Σ π k1 ∇log π = ∇KL(π ‖ π_ref)
    assert torch.allclose(expected_gradient(logits, ref_logits, PLACEMENTS["k1 in the reward"]),
                          torch.tensor([-q, q], dtype=torch.float64))


def test_on_policy_the_ratio_corrected_k3_has_k2s_gradient_token_by_token():
    # ∇(ρ k3) at ρ = 1 is k3 ∇log π + (1 − r) ∇log π = −log r ∇log π = ∇k2, for every sampled token
    logp = torch.tensor([-0.1, -2.3, -0.7, -5.0, -1.2], dtype=torch.float64, requires_grad=True)
    (g_ratio,) = torch.autograd.grad(importance_weighted(k3(logp, REF_LOGP), logp, logp.detach()).sum(), logp)
    (g_k2,) = torch.autograd.grad(k2(logp, REF_LOGP).sum(), logp)
    (g_k3,) = torch.autograd.grad(k3(logp, REF_LOGP).sum(), logp)
    assert torch.allclose(g_ratio, g_k2, atol=1e-12) and torch.allclose(g_k3, 1 - (REF_LOGP - logp).exp())
    assert torch.equal(importance_weighted(k3(logp, REF_LOGP), logp, logp.detach()), k3(logp, REF_LOGP))   # value kept


def test_off_policy_the_ratio_corrects_k3_to_the_reverse_kl_gradient():
    # tokens drawn from π_old ≠ π_θ: E_{π_old}[∇(π_θ/π_old · k3)] = ∇KL(π_θ ‖ π_ref); plain k3 gives neither KL
    logits, ref_logp = pair(1.0, seed=3, V=7)
    old_logp = torch.log_softmax(logits + 0.5 * torch.randn(7, generator=torch.Generator().manual_seed(4),
                                                            dtype=torch.float64), -1)
    reverse, forward = exact_gradients(logits, ref_logp)
    x = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(x, -1)
    w = old_logp.exp()                                                  # y ~ π_old, a constant
    (corrected,) = torch.autograd.grad((w * importance_weighted(k3(logp, ref_logp), logp, old_logp)).sum(), x)
    (plain,) = torch.autograd.grad((w * k3(torch.log_softmax(x, -1), ref_logp)).sum(), x)
    assert torch.allclose(corrected, reverse, atol=1e-12)
    assert (plain - reverse).norm() > 0.05 * reverse.norm() and (plain - forward).norm() > 0.05 * forward.norm()


def test_through_grpo_loss_on_sampled_responses_k2_follows_the_reverse_kl_and_k3_the_forward():
    """Monte Carlo through the real token path: a model's sampled responses, `token_logprobs` and `grpo_loss`
    (advantages 0, β = 1, so only the KL term acts). At every sampled prefix the expected gradient is the exact
    per-position KL's, so the parameter gradient of the estimator's loss is compared with the gradients of
    the exact reverse and forward per-token KLs at the same prefixes, aggregated the same way. Measured along
    the direction in which those two differ: 1 means the reverse KL's gradient, 0 the forward's (seeds 0–5: k2
    0.97–1.06, k3 −0.12–0.21)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=360, block_size=16, n_layer=1, n_embd=32, n_head=2)
    policy, ref = GPT(cfg).eval(), GPT(cfg).eval()
    with torch.no_grad():
        for p, q in zip(policy.parameters(), ref.parameters()):
            p.copy_(q + 0.3 * torch.randn_like(q))
        prompts = torch.randint(0, 352, (128, 3), generator=torch.Generator().manual_seed(0)).tolist()
        r = sample_responses(policy, prompts, n_samples=16, max_new_tokens=6, temperature=1.0,
                             generator=torch.Generator().manual_seed(0))
        ref_logits = ref(r.ids[:, :-1])                                 # (B, T-1, V)
        ref_logp = token_logprobs(ref, r.ids)                           # (B, T-1)
    mask = target_mask(r.response_mask)                                 # (B, T-1)
    params = list(policy.parameters())

    def grad_of(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    reverse = grad_of(grpo.aggregate(categorical_kl(policy(r.ids[:, :-1]), ref_logits), mask, "token"))
    forward = grad_of(grpo.aggregate(categorical_kl(ref_logits, policy(r.ids[:, :-1])), mask, "token"))
    d = reverse - forward
    assert d.norm() > 0.3 * reverse.norm()                              # the check has something to tell apart

    def along(estimator, ratio=False):
        logp = token_logprobs(policy, r.ids)                            # (B, T-1)
        loss = grpo.grpo_loss(logp, logp.detach(), ref_logp, torch.zeros(len(r)), mask, beta=1.0, mode="token",
                              kl_fn=estimator, kl_ratio=ratio)
        g = grad_of(loss)
        return g, float((g - forward) @ d / (d @ d))
    (g2, t2), (g3, t3), (g_ratio, t_ratio) = along(k2), along(k3), along(k3, ratio=True)
    assert abs(t2 - 1) < 0.35 and abs(t3) < 0.35, (t2, t3)
    assert torch.allclose(g_ratio, g2, atol=1e-6 * g2.abs().max())      # on-policy, the same gradient as k2


def test_docstring_examples():
    result = doctest.testmod(kl)
    assert result.attempted > 0 and result.failed == 0
