"""KL estimators k1, k2, k3 (Schulman, "Approximating KL divergence", 2020) against their oracles.

Oracles: numbers worked by hand; the exact KL of small categorical distributions (and torch's
own `kl_divergence` for it); exact expectations Σ_y π(y) k(y); Monte Carlo means with their
sampling error; and per-token values from the formulas TRL uses (its PPO trainer: ``logr =
ref − logp``, k1 = −logr, k3 = (exp(logr) − 1) − logr; its GRPO trainer: exp(ref − logp) −
(ref − logp) − 1; OpenRLHF's k2: (logp − ref)²/2), evaluated once and written down below.
"""

import doctest
import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from llmcourse import kl
from llmcourse.kl import ESTIMATORS, categorical_kl, k1, k2, k3, per_token_kl
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
TRL_K1 = [0.2, -1.2, 0.0, -3.0, 3.0]
TRL_K3 = [0.0187307531, 1.1201169227, 0.0, 16.0855369232, 2.0497870684]    # PPO's k3 == GRPO's per_token_kl
OPENRLHF_K2 = [0.02, 0.72, 0.0, 4.5, 4.5]


def test_values_match_the_formulas_of_trl_and_openrlhf():
    assert torch.allclose(k1(LOGP, REF_LOGP), torch.tensor(TRL_K1, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(k2(LOGP, REF_LOGP), torch.tensor(OPENRLHF_K2, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(k3(LOGP, REF_LOGP), torch.tensor(TRL_K3, dtype=torch.float64), atol=1e-10)


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


def test_docstring_examples():
    result = doctest.testmod(kl)
    assert result.attempted > 0 and result.failed == 0
