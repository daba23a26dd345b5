"""KL divergence between the policy and a reference, estimated per token from sampled tokens.

RL on a language model keeps the policy π near a reference π_ref (the model it started from)
with a penalty β·KL(π ‖ π_ref). The exact KL sums over the whole vocabulary at every position;
what a trainer has cheaply is the log-probability of the *sampled* token under both models.
Schulman's note "Approximating KL divergence" (2020) gives three estimators from those two
numbers. For a token y sampled from π, with the ratio r = π_ref(y) / π(y):

    k1 = −log r                 unbiased: E_π[k1] = KL(π ‖ π_ref); negative for some tokens
    k2 = ½ (log r)²             biased, always ≥ 0; ≈ KL when π and π_ref are close
    k3 = (r − 1) − log r        unbiased (E_π[r] = 1) and always ≥ 0 (since log r ≤ r − 1),
                                with less variance than k1 when π and π_ref are close

Those are statements about the estimators' *values*, which is what a log of the KL needs. A loss
is another matter: only its gradient acts, and autograd differentiates the estimator at the sampled
token, the draw itself held fixed (no score-function term). Per position, with y ~ π_θ:

    k1 in the loss   E[∇k1] = E[∇log π(y)] = 0                      does nothing on average
    k2 in the loss   E[∇k2] = E[log(π/π_ref)(y) ∇log π(y)] = ∇KL(π ‖ π_ref)    the reverse KL
    k3 in the loss   E[∇k3] = E[(1 − r) ∇log π(y)] = −Σ_y π_ref(y) ∇log π(y) = ∇KL(π_ref ‖ π)
                                                                    the *forward* KL
    k3 × ρ in the loss, ρ = π_θ(y)/π_old(y) with π_old detached (DeepSeek-V3.2, eq. 7):
                     E_{π_old}[∇(ρ k3)] = ∇KL(π ‖ π_ref)           the reverse KL again
    k1 in the reward (−β k1 added to the reward, no gradient through it; chapter 09's PPO):
                     the policy gradient E[k1 ∇log π(y)] = ∇KL(π ‖ π_ref)    the reverse KL
    k3 in the reward E[k3 ∇log π(y)] = ∇KL(π ‖ π_ref) − ∇KL(π_ref ‖ π)       biased

`expected_gradient` computes these expectations exactly on a categorical distribution (each line is a
per-token loss in `PLACEMENTS`); the tests check each against autograd's gradient of `categorical_kl`.
Over a whole response the reverse KL of the sequences also depends on how earlier tokens change later
prefixes: a per-token loss term (k2, or k3 × ρ) gives the reverse KL's gradient at each sampled prefix,
the response's summed k1 in the reward gives the sequence's (Tang & Munos 2025, "On a few pitfalls in KL
divergence gradient estimation for RL"; Shah et al. 2025, "A Comedy of Estimators").

PPO for LLMs (chapter 09) subtracts β·k1 from each token's reward; GRPO as published (DeepSeekMath)
adds β·k3 to each token's loss, which pulls along the forward KL's gradient although the objective names
the reverse one; TRL 1.16's ``GRPOTrainer`` multiplies it by the ratio π_θ/π_old by default
(``use_bias_correction_kl=True``, DeepSeek-V3.2), whose gradient is the reverse KL's. All estimators take (…)-shaped log-probs of the same
tokens and return per-token values of the same shape; average them over the response tokens with
`llmcourse.logprobs.masked_mean`.

`categorical_kl` is the exact KL between two categorical distributions given by logits,
the oracle that the estimators are tested against.
"""

from __future__ import annotations

from typing import Callable

import torch


def k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``log π(y) − log π_ref(y)`` = −log r, per token; same shape as the inputs.

    logp: log π of the sampled tokens (the distribution they were drawn from);
    ref_logp: log π_ref of the same tokens.

    >>> k1(torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.6])))
    tensor([ 0.6931, -1.0986])

    As a loss term its gradient is ∇log π(y), zero on average over y ~ π: it belongs in the reward.
    """
    return logp - ref_logp                                              # (…)


def k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``½ (log r)²`` with log r = log π_ref(y) − log π(y), per token; same shape as the inputs.

    >>> k2(torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.6])))
    tensor([0.2402, 0.6035])

    Its value is biased, but as a loss term its gradient, −log r · ∇log π(y), is on average the gradient
    of KL(π ‖ π_ref) at each position.
    """
    log_ratio = ref_logp - logp                                         # (…): log r
    return 0.5 * log_ratio**2                                           # (…)


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``(r − 1) − log r`` with r = π_ref(y) / π(y), per token; same shape as the inputs.

    For y = "a" with π(a) = 0.5 and π_ref(a) = 0.25: r = 0.5, k3 = −0.5 + log 2 = 0.1931;
    for π(y) = 0.2, π_ref(y) = 0.6: r = 3, k3 = 2 − log 3 = 0.9014.

    >>> k3(torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.6])))
    tensor([0.1931, 0.9014])

    The formula is the one TRL and OpenRLHF use, ``exp(log r) − 1 − log r``. Where r is within
    about 1e-3 of 1, the true value (≈ ½ (log r)²) is smaller than the rounding of ``exp`` near 1,
    so a float32 result can be off by ~1e-7 either way, even slightly negative; exactly 0 at r = 1.

    Its value is unbiased for KL(π ‖ π_ref), but as a loss term its gradient, (1 − r) ∇log π(y), is on
    average the gradient of the forward KL(π_ref ‖ π); `importance_weighted` restores the reverse one.
    """
    log_ratio = ref_logp - logp                                         # (…): log r
    return (torch.exp(log_ratio) - 1) - log_ratio                       # (…): ≥ 0, 0 where π = π_ref


ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": k1, "k2": k2, "k3": k3}
"""The estimators by name, e.g. for a config field ``kl_estimator: str = "k3"``."""

def importance_weighted(values: torch.Tensor, logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """``values · π_θ(y)/π_old(y)`` per token, the ratio's denominator detached: (…) -> (…).

    DeepSeek-V3.2's correction of k3 in the loss (eq. 7; TRL ``use_bias_correction_kl``): the tokens were
    drawn from π_old, and the ratio both reweights them to π_θ and, differentiated, adds the score-function
    term k3 ∇log π that turns k3's gradient into the reverse KL's. On-policy (π_old = π_θ) its value is 1,
    but its gradient is not 0:

    >>> logp = torch.tensor([-1.0], requires_grad=True)
    >>> w = importance_weighted(torch.tensor([0.3]), logp, logp.detach())
    >>> w.backward(); w.item(), logp.grad.item()
    (0.30000001192092896, 0.30000001192092896)
    """
    return torch.exp(logp - old_logp.detach()) * values                # (…)


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """The estimator named ``estimator`` ("k1", "k2" or "k3") applied per token."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; use one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[estimator](logp, ref_logp)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Exact KL(p ‖ q) = Σ_x p(x) (log p(x) − log q(x)) over the last dim: (…, V), (…, V) -> (…).

    The logits need not be normalised (they go through a log-softmax); a token that p gives
    probability 0 (logit −inf) adds 0.

    >>> p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    >>> categorical_kl(p.log(), q.log())          # ½ log 2 + ½ log(2/3)
    tensor(0.1438)
    """
    logp = torch.log_softmax(logits_p, dim=-1)                          # (…, V)
    logq = torch.log_softmax(logits_q, dim=-1)                          # (…, V)
    p = logp.exp()                                                      # (…, V)
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))  # (…, V): 0 · log 0 = 0
    return terms.sum(dim=-1)                                            # (…)


def k3_ratio_loss(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 × π_θ/π_old as a loss term where the tokens were just sampled from π_θ (π_old = π_θ, detached)."""
    return importance_weighted(k3(logp, ref_logp), logp, logp.detach())


def in_the_reward(estimator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-token loss of an estimator put in the reward: REINFORCE's −A log π(y) with the advantage
    A = −estimator(y), a constant (no gradient flows through a reward)."""
    def loss(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
        return estimator(logp, ref_logp).detach() * logp
    return loss


PLACEMENTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1 in the loss": k1, "k2 in the loss": k2, "k3 in the loss": k3, "k3 × ratio in the loss": k3_ratio_loss,
    "k1 in the reward": in_the_reward(k1), "k3 in the reward": in_the_reward(k3)}
"""Where a KL estimate can act in training, each as the per-token loss ``ℓ(logp, ref_logp)`` a step differentiates
at a sampled token (see the module docstring for what each follows on average; `expected_gradient`)."""


def expected_gradient(logits: torch.Tensor, ref_logits: torch.Tensor,
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Exact E_{y~π}[∇_logits ℓ(y)] of a per-token loss ℓ = ``loss_fn(logp, ref_logp)``: (V,), (V,) logits -> (V,).

    π = softmax(logits), π_ref = softmax(ref_logits). A training step differentiates ℓ at a sampled token with the
    draw held fixed, as autograd does; here every token's ℓ is weighed by π(y), a constant (detached), so one
    backward pass gives the expectation exactly, without sampling. Compare with
    ``torch.autograd.grad(categorical_kl(logits, ref_logits), logits)`` (the reverse KL's gradient) and with
    ``categorical_kl(ref_logits, logits)``'s (the forward KL's).

    π = (½, ½), π_ref = (¾, ¼): k1 in the loss does nothing; k2 gives ∇KL(π ‖ π_ref) = (−(log 3)/4, (log 3)/4);
    k3 gives ∇KL(π_ref ‖ π) = π − π_ref:

    >>> logits, ref_logits = torch.zeros(2), torch.tensor([0.75, 0.25]).log()
    >>> [expected_gradient(logits, ref_logits, k).abs() if k is k1 else expected_gradient(logits, ref_logits, k)
    ...  for k in (k1, k2, k3)]
    [tensor([0., 0.]), tensor([-0.2747,  0.2747]), tensor([-0.2500,  0.2500])]
    """
    logits = logits.detach().clone().requires_grad_(True)               # (V,)
    logp = torch.log_softmax(logits, dim=-1)                            # (V,): log π(y) for every y
    ref_logp = torch.log_softmax(ref_logits.detach(), dim=-1)           # (V,)
    weights = logp.exp().detach()                                       # (V,): y ~ π, the draw not differentiated
    (grad,) = torch.autograd.grad((weights * loss_fn(logp, ref_logp)).sum(), logits)
    return grad                                                         # (V,)
