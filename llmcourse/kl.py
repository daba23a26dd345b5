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

PPO for LLMs (chapter 09) subtracts β·k1 (or k3) from each token's reward; GRPO (chapter 10)
adds β·k3 to each token's loss, which is what TRL's ``GRPOTrainer`` does. All three take
(…)-shaped log-probs of the same tokens and return per-token values of the same shape;
average them over the response tokens with `llmcourse.logprobs.masked_mean`.

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
    """
    return logp - ref_logp                                              # (…)


def k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``½ (log r)²`` with log r = log π_ref(y) − log π(y), per token; same shape as the inputs.

    >>> k2(torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.6])))
    tensor([0.2402, 0.6035])
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
    """
    log_ratio = ref_logp - logp                                         # (…): log r
    return (torch.exp(log_ratio) - 1) - log_ratio                       # (…): ≥ 0, 0 where π = π_ref


ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": k1, "k2": k2, "k3": k3}
"""The estimators by name, e.g. for a config field ``kl_estimator: str = "k3"``."""


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
