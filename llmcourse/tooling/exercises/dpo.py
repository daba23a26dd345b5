"""Chapter 08 exercises: sequence log-probs of responses, the DPO loss, implicit rewards, IPO, SimPO, RPO's SFT term,
the ORPO loss and the KTO loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import dpo
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


_NO_GRAD_NO_REFERENCE_HINT = ("The value is right but the loss carries no gradient: it was computed under "
                              "`torch.no_grad()` or detached on the way, so training with it would change nothing.")
_NO_GRAD_HINT = ("The value is right but the loss carries no gradient: it was computed under `torch.no_grad()`, "
                 "or detached (`.detach()`, `.item()`, `float(...)`, NumPy) on the way, so training with it would "
                 "change nothing. Detach only the reference's log-probs.")

# --------------------------------------------------------------------------- 8.1 sequence log-probs
def _seq_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(logits=torch.log(_t([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]])), ids=_t([[0, 1, 0]], torch.long),
                response_mask=_t([[False, True, True]], torch.bool))
    cases = [dict(hand, average=False), dict(hand, average=True)]
    # a response token whose logit trails by 200: its probability underflows to 0 in float32 (log of it: -inf)
    cases.append(dict(logits=_t([[[0.0, 0.0], [0.0, 200.0], [3.0, 0.0]]]), ids=_t([[1, 0, 0]], torch.long),
                      response_mask=_t([[False, True, True]], torch.bool), average=False))
    for average in (False, True, False):
        B, V = int(rng.integers(2, 5)), int(rng.integers(6, 12))
        prompt = rng.integers(1, 4, B)                                 # at least one prompt token
        response = rng.integers(1, 6, B)
        T = int((prompt + response).max()) + int(rng.integers(0, 2))
        ids = rng.integers(0, V, (B, T))
        mask = np.zeros((B, T), dtype=bool)
        for i in range(B):
            mask[i, prompt[i]:prompt[i] + response[i]] = True
        cases.append(dict(logits=_t(rng.normal(0, 2, (B, T, V))), ids=_t(ids, torch.long),
                          response_mask=_t(mask, torch.bool), average=average))
    return cases


def _masked(token_logp, kept, average):
    total = (token_logp * kept).sum(dim=1)
    return total / kept.sum(dim=1) if average else total


def _seq_no_shift(logits, ids, response_mask, average=False):
    logp = F.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)   # position t scored on token t
    return _masked(logp, response_mask, average)


def _seq_mask_not_shifted(logits, ids, response_mask, average=False):
    logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return _masked(logp, response_mask[:, :-1], average)               # the mask of tokens 0..T-2, not 1..T-1


def _seq_no_mask(logits, ids, response_mask, average=False):
    logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp.mean(dim=1) if average else logp.sum(dim=1)            # prompt and padding counted too


def _seq_always_sum(logits, ids, response_mask, average=False):
    return dpo.sequence_logprob(logits, ids, response_mask)            # ignores `average`


def _seq_always_mean(logits, ids, response_mask, average=False):
    return dpo.sequence_logprob(logits, ids, response_mask, average=True)


def _seq_mean_over_columns(logits, ids, response_mask, average=False):
    total = dpo.sequence_logprob(logits, ids, response_mask)
    return total / (ids.shape[1] - 1) if average else total            # divides by T - 1, not the response length


def _seq_raw_logits(logits, ids, response_mask, average=False):
    scores = logits[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)   # logits, not log-probs
    return _masked(scores, response_mask[:, 1:], average)


def _seq_in_place(logits, ids, response_mask, average=False):
    logits -= logits.logsumexp(dim=-1, keepdim=True)                   # log-softmax written over the caller's logits
    return dpo.sequence_logprob(logits, ids, response_mask, average)


def _seq_log_of_softmax(logits, ids, response_mask, average=False):
    token_logp = torch.log(torch.softmax(logits[:, :-1], dim=-1)).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return _masked(token_logp, response_mask[:, 1:].to(token_logp.dtype), average)


def _seq_cross_entropy(logits, ids, response_mask, average=False):
    T = ids.shape[1]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    kept = response_mask[:, 1:]
    total = -(nll.view(-1, T - 1) * kept).sum(dim=1)
    return total / kept.sum(dim=1) if average else total


# --------------------------------------------------------------------------- 8.2 the DPO loss

_PAIR_ARGS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pair_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(policy_chosen_logps=_t([-4.0]), policy_rejected_logps=_t([-6.0]), ref_chosen_logps=_t([-5.0]),
                ref_rejected_logps=_t([-5.0]), beta=0.5)
    two = dict(policy_chosen_logps=_t([-3.0, -10.0]), policy_rejected_logps=_t([-9.0, -7.0]),
               ref_chosen_logps=_t([-5.0, -8.0]), ref_rejected_logps=_t([-6.0, -8.0]), beta=0.1)
    cases = [hand, two]
    for beta in (0.1, 0.5, 2.0):
        B = int(rng.integers(3, 9))
        ref_c, ref_r = rng.uniform(-30, -2, B), rng.uniform(-30, -2, B)
        cases.append(dict(policy_chosen_logps=_t(ref_c + rng.normal(0, 3, B)),
                          policy_rejected_logps=_t(ref_r + rng.normal(0, 3, B)),
                          ref_chosen_logps=_t(ref_c), ref_rejected_logps=_t(ref_r), beta=beta))
    return cases


def _dpo_cases(rng: np.random.Generator) -> list[dict]:
    # the last pair: the policy prefers the rejected response by 300 nats more than the reference does
    far = dict(policy_chosen_logps=_t([-5.0, -310.0]), policy_rejected_logps=_t([-6.0, -10.0]),
               ref_chosen_logps=_t([-5.0, -10.0]), ref_rejected_logps=_t([-6.0, -10.0]), beta=1.0)
    return _pair_cases(rng) + [far]


def _h(pc, pr, rc, rr):
    return (pc - rc.detach()) - (pr - rr.detach())


def _dpo_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return -F.logsigmoid(-beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)).mean()


def _dpo_plus_sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return F.logsigmoid(beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)).mean()


def _dpo_beta_outside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return -beta * F.logsigmoid(_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)).mean()


def _dpo_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps)).mean()


def _dpo_sum(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return -F.logsigmoid(beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)).sum()


def _dpo_ref_not_detached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * h).mean()


def _dpo_log_of_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -torch.log(torch.sigmoid(beta * h)).mean()


def _dpo_in_place(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    policy_chosen_logps -= ref_chosen_logps.detach()                   # the log-ratio written over the caller's log-probs
    policy_rejected_logps -= ref_rejected_logps.detach()
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps)).mean()


def _dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    pi_logratios = policy_chosen_logps - policy_rejected_logps         # TRL's grouping: policy margin − reference margin
    ref_logratios = (ref_chosen_logps - ref_rejected_logps).detach()
    return F.softplus(-beta * (pi_logratios - ref_logratios)).mean()   # −log σ(x) = softplus(−x)


# --------------------------------------------------------------------------- 8.3 implicit rewards, accuracy

def _reward_cases(rng: np.random.Generator) -> list[dict]:
    cases = _pair_cases(rng)
    # ties: at the start of training the policy is the reference, every reward is 0
    B = 4
    ref = _t(rng.uniform(-20, -2, (2, B)))
    cases.append(dict(policy_chosen_logps=ref[0].clone(), policy_rejected_logps=ref[1].clone(),
                      ref_chosen_logps=ref[0], ref_rejected_logps=ref[1], beta=0.1))
    # near ties: the chosen rewards lead by 1e-4 or trail by 1e-4 (no pair is tied)
    cases.append(dict(policy_chosen_logps=_t([-4.0, -6.0, -2.0]), policy_rejected_logps=_t([-5.0, -5.0, -2.0]),
                      ref_chosen_logps=_t([-4.001, -6.0, -2.0]), ref_rejected_logps=_t([-5.0, -5.0, -2.0 + 0.001]),
                      beta=0.1))
    return cases


def _rw_ties_count(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r, _ = dpo.implicit_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return c, r, (c >= r).float().mean().item()


def _rw_not_detached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c = beta * (policy_chosen_logps - ref_chosen_logps)
    r = beta * (policy_rejected_logps - ref_rejected_logps)
    return c, r, (c > r).float().mean().item()


def _rw_no_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r = (policy_chosen_logps - ref_chosen_logps).detach(), (policy_rejected_logps - ref_rejected_logps).detach()
    return c, r, (c > r).float().mean().item()


def _rw_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r = (beta * policy_chosen_logps).detach(), (beta * policy_rejected_logps).detach()
    return c, r, (c > r).float().mean().item()


def _rw_inverted_ratio(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r = (beta * (ref_chosen_logps - policy_chosen_logps)).detach(), (beta * (ref_rejected_logps - policy_rejected_logps)).detach()
    return c, r, (c > r).float().mean().item()


def _rw_count(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r, _ = dpo.implicit_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return c, r, (c > r).sum().item()


def _rw_tensor_accuracy(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    with torch.no_grad():
        c = beta * (policy_chosen_logps - ref_chosen_logps)
        r = beta * (policy_rejected_logps - ref_rejected_logps)
    return c, r, (c - r > 0).float().mean()                            # a 0-d tensor, not a float


def _rw_tolerance(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c, r, _ = dpo.implicit_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return c, r, (c - r > 1e-3).float().mean().item()


def _rw_in_place(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    c = policy_chosen_logps.detach()                                   # a view of the caller's tensor, not a copy
    c -= ref_chosen_logps.detach()
    c *= beta
    r = policy_rejected_logps.detach()
    r -= ref_rejected_logps.detach()
    r *= beta
    return c, r, (c > r).float().mean().item()


# --------------------------------------------------------------------------- 8.4 IPO


def _ipo_cases(rng: np.random.Generator) -> list[dict]:
    hand, two, *rest = _pair_cases(rng)
    return [two, hand, *rest]       # first a case where h − 1/(2β) is 0 and −8: a square is not an |·| there


def _ipo_target_one_over_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return ((_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) - 1 / beta) ** 2).mean()


def _ipo_plus_target(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return ((_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) + 1 / (2 * beta)) ** 2).mean()


def _ipo_beta_inside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return ((beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) - 0.5) ** 2).mean()


def _ipo_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return ((policy_chosen_logps - policy_rejected_logps - 1 / (2 * beta)) ** 2).mean()


def _ipo_sum(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return ((_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) - 1 / (2 * beta)) ** 2).sum()


def _ipo_ref_not_detached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((h - 1 / (2 * beta)) ** 2).mean()


def _ipo_expanded(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h * h - h / beta + 1 / (4 * beta ** 2)).mean()            # the square expanded


# --------------------------------------------------------------------------- 8.5 SimPO


def _simpo_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(policy_chosen_logps=_t([-2.0]), policy_rejected_logps=_t([-8.0]), chosen_lens=_t([2], torch.long),
                rejected_lens=_t([3], torch.long), beta=2.0, gamma=1.0)
    # the second pair: the chosen response's average log-prob trails by 50 nats per token, β 10: margin −500
    far = dict(policy_chosen_logps=_t([-4.0, -100.0]), policy_rejected_logps=_t([-6.0, -2.0]),
               chosen_lens=_t([2, 2], torch.long), rejected_lens=_t([3, 2], torch.long), beta=10.0, gamma=1.0)
    cases = [hand, far]
    for beta, gamma in ((2.0, 0.5), (2.5, 1.4), (10.0, 3.0)):
        B = int(rng.integers(3, 9))
        lc, lr = rng.integers(3, 30, B), rng.integers(3, 30, B)
        cases.append(dict(policy_chosen_logps=_t(-lc * rng.uniform(0.05, 1.0, B)),
                          policy_rejected_logps=_t(-lr * rng.uniform(0.05, 1.0, B)),
                          chosen_lens=_t(lc, torch.long), rejected_lens=_t(lr, torch.long), beta=beta, gamma=gamma))
    return cases


def _simpo_no_length(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps) - gamma).mean()


def _simpo_gamma_inside(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_logps / chosen_lens - policy_rejected_logps / rejected_lens - gamma)).mean()


def _simpo_plus_gamma(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_logps / chosen_lens - policy_rejected_logps / rejected_lens) + gamma).mean()


def _simpo_lens_swapped(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_logps / rejected_lens - policy_rejected_logps / chosen_lens) - gamma).mean()


def _simpo_total_length(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    margin = (policy_chosen_logps - policy_rejected_logps) / (chosen_lens + rejected_lens)
    return -F.logsigmoid(beta * margin - gamma).mean()


def _simpo_sum(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_logps / chosen_lens - policy_rejected_logps / rejected_lens) - gamma).sum()


def _simpo_in_place(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    policy_chosen_logps /= chosen_lens                                 # the averages written over the caller's sums
    policy_rejected_logps /= rejected_lens
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps) - gamma).mean()


def _simpo_log_of_sigmoid(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    margin = beta * (policy_chosen_logps / chosen_lens - policy_rejected_logps / rejected_lens) - gamma
    return -torch.log(torch.sigmoid(margin)).mean()


def _simpo_trl_form(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, beta, gamma):
    logits = policy_chosen_logps / chosen_lens - policy_rejected_logps / rejected_lens - gamma / beta   # TRL's CPO
    return -F.logsigmoid(beta * logits).mean()


# --------------------------------------------------------------------------- 8.6 RPO's SFT term


def _nll_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(policy_chosen_logps=_t([-4.0, -10.0]), chosen_lens=_t([3, 4], torch.long)),
             dict(policy_chosen_logps=_t([-2.0]), chosen_lens=_t([4], torch.long))]
    for _ in range(3):
        B = int(rng.integers(3, 9))
        lens = rng.integers(2, 30, B)
        cases.append(dict(policy_chosen_logps=_t(-lens * rng.uniform(0.02, 1.5, B)), chosen_lens=_t(lens, torch.long)))
    return cases


def _nll_no_length(policy_chosen_logps, chosen_lens):
    return (-policy_chosen_logps).mean()


def _nll_sign(policy_chosen_logps, chosen_lens):
    return (policy_chosen_logps / chosen_lens).mean()


def _nll_sum(policy_chosen_logps, chosen_lens):
    return (-policy_chosen_logps / chosen_lens).sum()


def _nll_token_mean(policy_chosen_logps, chosen_lens):
    return -policy_chosen_logps.sum() / chosen_lens.sum()              # every token of the batch weighs the same


def _nll_in_place(policy_chosen_logps, chosen_lens):
    policy_chosen_logps /= chosen_lens                                 # per-token averages written over the caller's sums
    return -policy_chosen_logps.mean()


def _nll_via_mean_of_ratio(policy_chosen_logps, chosen_lens):
    return -torch.mean(policy_chosen_logps.double() / chosen_lens.double())


# --------------------------------------------------------------------------- 8.7 ORPO


def _orpo_cases(rng: np.random.Generator) -> list[dict]:
    log = np.log
    hand = dict(policy_chosen_logps=_t([2 * log(0.5)]), policy_rejected_logps=_t([log(0.2)]),
                chosen_lens=_t([2], torch.long), rejected_lens=_t([1], torch.long), lam=0.5)
    two = dict(policy_chosen_logps=_t([2 * log(0.5), 3 * log(0.2)]), policy_rejected_logps=_t([log(0.2), 2 * log(0.5)]),
               chosen_lens=_t([2, 3], torch.long), rejected_lens=_t([1, 2], torch.long), lam=0.1)
    # extreme values: a mean log-prob of −120 per token (P = e^−120 is 0 in float32), chosen side, then rejected side
    chosen_far = dict(policy_chosen_logps=_t([-240.0, -3.0]), policy_rejected_logps=_t([-2.0, -12.0]),
                      chosen_lens=_t([2, 6], torch.long), rejected_lens=_t([4, 3], torch.long), lam=1.0)
    rejected_far = dict(policy_chosen_logps=_t([-1.0, -3.0]), policy_rejected_logps=_t([-360.0, -12.0]),
                        chosen_lens=_t([5, 6], torch.long), rejected_lens=_t([3, 3], torch.long), lam=1.0)
    cases = [hand, two, chosen_far, rejected_far]
    for lam in (0.1, 0.5, 2.0):
        B = int(rng.integers(3, 9))
        lc, lr = rng.integers(3, 30, B), rng.integers(3, 30, B)
        cases.append(dict(policy_chosen_logps=_t(lc * rng.uniform(-3.0, -0.1, B)),
                          policy_rejected_logps=_t(lr * rng.uniform(-3.0, -0.1, B)),
                          chosen_lens=_t(lc, torch.long), rejected_lens=_t(lr, torch.long), lam=lam))
    return cases


def _orpo_with(log_odds, odds_term, nll, policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, lam):
    """ORPO written from its parts, so that each known mistake changes one of them."""
    ratio = log_odds(policy_chosen_logps / chosen_lens) - log_odds(policy_rejected_logps / rejected_lens)
    return nll(policy_chosen_logps, chosen_lens) + lam * odds_term(ratio)


def _or_term(ratio):
    return -F.logsigmoid(ratio).mean()


def _naive_log_odds(avg):
    p = torch.exp(avg)
    return torch.log(p) - torch.log(1 - p)


def _trl_log_odds(avg):
    return avg - torch.log1p(-torch.exp(avg))                           # TRL's ORPOTrainer.odds_ratio_loss


def _orpo_unnormalised(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, lam):
    ratio = dpo.log_odds(policy_chosen_logps) - dpo.log_odds(policy_rejected_logps)   # whole-sequence P(y|x)
    return dpo.chosen_nll(policy_chosen_logps, chosen_lens) + lam * _or_term(ratio)


def _orpo_naive(**kw):
    return _orpo_with(_naive_log_odds, _or_term, dpo.chosen_nll, **kw)


def _orpo_log_of_sigmoid(**kw):
    return _orpo_with(dpo.log_odds, lambda r: -torch.log(torch.sigmoid(r)).mean(), dpo.chosen_nll, **kw)


def _orpo_term_sign(**kw):
    return _orpo_with(dpo.log_odds, lambda r: F.logsigmoid(r).mean(), dpo.chosen_nll, **kw)


def _orpo_swapped(**kw):
    return _orpo_with(dpo.log_odds, lambda r: -F.logsigmoid(-r).mean(), dpo.chosen_nll, **kw)


def _orpo_probability_ratio(**kw):
    return _orpo_with(lambda avg: avg, _or_term, dpo.chosen_nll, **kw)     # log P_w − log P_l: no log(1 − P)


def _orpo_no_lambda(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, lam):
    return _orpo_with(dpo.log_odds, _or_term, dpo.chosen_nll, policy_chosen_logps, policy_rejected_logps,
                      chosen_lens, rejected_lens, 1.0)


def _orpo_lambda_on_sft(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, lam):
    ratio = dpo.log_odds(policy_chosen_logps / chosen_lens) - dpo.log_odds(policy_rejected_logps / rejected_lens)
    return lam * dpo.chosen_nll(policy_chosen_logps, chosen_lens) + _or_term(ratio)


def _orpo_no_sft(**kw):
    return _orpo_with(dpo.log_odds, _or_term, lambda logps, lens: 0.0, **kw)


def _orpo_nll_per_sequence(**kw):
    return _orpo_with(dpo.log_odds, _or_term, lambda logps, lens: (-logps).mean(), **kw)


def _orpo_sum(**kw):
    return _orpo_with(dpo.log_odds, lambda r: -F.logsigmoid(r).sum(), lambda logps, lens: (-logps / lens).sum(), **kw)


def _orpo_in_place(policy_chosen_logps, policy_rejected_logps, chosen_lens, rejected_lens, lam):
    policy_chosen_logps /= chosen_lens                                 # per-token means written over the caller's sums
    policy_rejected_logps /= rejected_lens
    ratio = dpo.log_odds(policy_chosen_logps) - dpo.log_odds(policy_rejected_logps)
    return -policy_chosen_logps.mean() + lam * _or_term(ratio)


def _orpo_trl_form(**kw):
    return _orpo_with(_trl_log_odds, _or_term, dpo.chosen_nll, **kw)


# --------------------------------------------------------------------------- 8.8 KTO

_KTO_ARGS = ("policy_logps", "ref_logps", "policy_kl_logps", "ref_kl_logps")


def _kto_case(rng: np.random.Generator, B: int, z0_shift: float, beta: float, lambda_d: float, lambda_u: float) -> dict:
    ref, ref_kl = rng.uniform(-30, -2, B), rng.uniform(-40, -5, B)
    desirable = rng.permutation(np.arange(B) < int(rng.integers(1, B)))         # both labels present
    return dict(policy_logps=_t(ref + rng.normal(0, 3, B)), ref_logps=_t(ref), desirable=_t(desirable, torch.bool),
                policy_kl_logps=_t(ref_kl + z0_shift + rng.normal(0, 1, B)), ref_kl_logps=_t(ref_kl),
                beta=beta, lambda_d=lambda_d, lambda_u=lambda_u)


def _kto_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(policy_logps=_t([-4.0, -6.0]), ref_logps=_t([-5.0, -5.0]), desirable=_t([True, False], torch.bool),
                policy_kl_logps=_t([-10.0, -12.0]), ref_kl_logps=_t([-11.0, -12.0]), beta=1.0, lambda_d=1.0, lambda_u=2.0)
    # the mismatched rows' mean log-ratio is −1.5: z0 = max(0, −1.5) = 0
    clamped = dict(policy_logps=_t([-4.0, -6.0, -3.0]), ref_logps=_t([-5.0, -5.0, -5.0]),
                   desirable=_t([False, True, False], torch.bool), policy_kl_logps=_t([-13.0, -12.5, -10.0]),
                   ref_kl_logps=_t([-11.0, -12.0, -8.0]), beta=0.5, lambda_d=1.5, lambda_u=1.0)
    cases = [hand, clamped]
    for beta, z0_shift in ((0.1, 2.0), (0.5, 1.0), (2.0, 0.5), (0.5, -1.5)):
        lambda_d, lambda_u = rng.uniform(0.5, 2.0, 2)
        cases.append(_kto_case(rng, int(rng.integers(4, 11)), z0_shift, beta, float(lambda_d), float(lambda_u)))
    return cases


def _kto_with(z0_fn, desirable_fn, undesirable_fn, policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps,
              beta, lambda_d, lambda_u):
    """KTO written from its parts, so that each known mistake changes one of them."""
    z0 = z0_fn(policy_kl_logps, ref_kl_logps, policy_logps, ref_logps)
    r = policy_logps - ref_logps.detach()
    losses = torch.where(desirable, lambda_d * desirable_fn(beta, r, z0), lambda_u * undesirable_fn(beta, r, z0))
    return losses.mean()


def _z0(policy_kl_logps, ref_kl_logps, policy_logps, ref_logps):
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def _above(beta, r, z0):
    return 1 - torch.sigmoid(beta * (r - z0))


def _below(beta, r, z0):
    return 1 - torch.sigmoid(beta * (z0 - r))


def _kto_z0_not_detached(**kw):
    return _kto_with(lambda pk, rk, p, r: (pk - rk).mean().clamp(min=0), _above, _below, **kw)


def _kto_lambdas_swapped(lambda_d, lambda_u, **kw):
    return _kto_with(_z0, _above, _below, lambda_d=lambda_u, lambda_u=lambda_d, **kw)


def _kto_undesirable_wrong_side(**kw):
    return _kto_with(_z0, _above, _above, **kw)                        # pushes undesirable examples *up*


def _kto_z0_not_clamped(**kw):
    return _kto_with(lambda pk, rk, p, r: (pk - rk).mean().detach(), _above, _below, **kw)


def _kto_no_reference_point(**kw):
    return _kto_with(lambda pk, rk, p, r: torch.zeros(()), _above, _below, **kw)


def _kto_z0_from_the_batch(**kw):
    return _kto_with(lambda pk, rk, p, r: (p - r).mean().clamp(min=0).detach(), _above, _below, **kw)


def _kto_log_sigmoid(**kw):
    return _kto_with(_z0, lambda b, r, z: -F.logsigmoid(b * (r - z)), lambda b, r, z: -F.logsigmoid(b * (z - r)), **kw)


def _kto_ref_not_detached(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, beta, lambda_d, lambda_u):
    z0 = _z0(policy_kl_logps, ref_kl_logps, policy_logps, ref_logps)
    r = policy_logps - ref_logps
    return torch.where(desirable, lambda_d * _above(beta, r, z0), lambda_u * _below(beta, r, z0)).mean()


def _kto_class_means(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, beta, lambda_d, lambda_u):
    z0 = _z0(policy_kl_logps, ref_kl_logps, policy_logps, ref_logps)
    r = policy_logps - ref_logps.detach()
    return (lambda_d * _above(beta, r[desirable], z0)).mean() + (lambda_u * _below(beta, r[~desirable], z0)).mean()


def _kto_in_place(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, beta, lambda_d, lambda_u):
    policy_logps -= ref_logps.detach()                                 # the log-ratios written over the caller's log-probs
    z0 = _z0(policy_kl_logps, ref_kl_logps, policy_logps, ref_logps)
    return torch.where(desirable, lambda_d * _above(beta, policy_logps, z0),
                       lambda_u * _below(beta, policy_logps, z0)).mean()


def _kto_trl_form(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, beta, lambda_d, lambda_u):
    kl = (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)         # TRL's KTOTrainer.kto_loss
    chosen = 1 - torch.sigmoid(beta * ((policy_logps - ref_logps.detach())[desirable] - kl))
    rejected = 1 - torch.sigmoid(beta * (kl - (policy_logps - ref_logps.detach())[~desirable]))
    return torch.cat((lambda_d * chosen, lambda_u * rejected), 0).mean()


# --------------------------------------------------------------------------- registry

register(
    Exercise(
        id="8.1", title="Sequence log-probs of responses", reference=dpo.sequence_logprob, cases=_seq_cases,
        grad_wrt=("logits",),
        grad_help="DPO trains the policy through these log-probs, so the result must stay connected to the logits: no "
                  "`torch.no_grad()`, `.detach()`, `.item()` or NumPy on the way.",
        hint="log-softmax the logits over the vocabulary; position t predicts token t + 1, so score ids[:, 1:] with "
             "logits[:, :-1] and keep the columns where response_mask[:, 1:] is True; sum per row (divide by the "
             "number of kept tokens when average=True).",
        known_wrong=[
            KnownWrong("no shift", _seq_no_shift,
                       "You scored token t with the logits at position t. A causal model's logits at position t "
                       "predict the *next* token: pair logits[:, :-1] with ids[:, 1:] (an off-by-one shift)."),
            KnownWrong("mask not shifted", _seq_mask_not_shifted,
                       "The log-probs are shifted but the mask is not: column t scores token t + 1, so it is kept when "
                       "token t + 1 is a response token, response_mask[:, 1:] (not [:, :-1]). Yours counts the last "
                       "prompt token and drops the response's last one (its end-of-text)."),
            KnownWrong("no mask", _seq_no_mask,
                       "You summed over every position, prompt and padding included. Only the response's tokens count: "
                       "keep the columns where response_mask[:, 1:] is True."),
            KnownWrong("raw logits", _seq_raw_logits,
                       "You gathered the logits themselves. They are unnormalised scores: take "
                       "F.log_softmax(logits, dim=-1) first, so that each position's probabilities sum to 1."),
            KnownWrong("ignores average (always sums)", _seq_always_sum,
                       "With average=True the result is the mean log-prob per response token: divide each row's sum "
                       "by its number of response tokens (SimPO's length normalisation)."),
            KnownWrong("ignores average (always averages)", _seq_always_mean,
                       "With average=False (the default, what DPO uses) the result is the *sum* over the response's "
                       "tokens, log π(y|x) = Σ_t log π(y_t | x, y_<t), not the mean."),
            KnownWrong("average over all T − 1 columns", _seq_mean_over_columns,
                       "You divided by the number of columns T − 1, prompt and padding included. The mean is over the "
                       "response's own tokens: divide by response_mask[:, 1:].sum(dim=1)."),
            KnownWrong("no gradient", under_no_grad(dpo.sequence_logprob),
                       "The value is right but no gradient reaches the logits: it was computed under `torch.no_grad()` "
                       "(or detached), so DPO could not train the policy through it."),
            KnownWrong("log of softmax", _seq_log_of_softmax,
                       "torch.log(torch.softmax(…)) underflows: a token whose logit trails by more than about 88 gets "
                       "probability 0 in float32, log 0 = −inf, and a NaN gradient. F.log_softmax computes the same "
                       "thing stably (logits minus their logsumexp)."),
            KnownWrong("log-softmax in place", _seq_in_place,
                       "The value is right, but you wrote the log-softmax into the caller's `logits` (`logits -= …`). "
                       "Compute it into a new tensor: `logp = F.log_softmax(logits, dim=-1)`."),
        ],
        known_right=[KnownRight("cross-entropy per token", _seq_cross_entropy),
                     KnownRight("float64", as_float64(dpo.sequence_logprob))],
        atol=1e-5),
    Exercise(
        id="8.2", title="The DPO loss", reference=dpo.dpo_loss, cases=_dpo_cases, grad_wrt=_PAIR_ARGS,
        hint="h = (π_w − ref_w) − (π_l − ref_l) with the reference's log-probs detached; "
             "loss = mean over pairs of −log σ(β h), written with F.logsigmoid.",
        known_wrong=[
            KnownWrong("chosen and rejected swapped", _dpo_swapped,
                       "Your loss falls when the *rejected* response gains probability: the margin is "
                       "(chosen log-ratio) − (rejected log-ratio), β · h, not −β · h."),
            KnownWrong("missing minus sign", _dpo_plus_sign,
                       "log σ(β h) is the log-likelihood of the preferences, which we *maximise*: the loss is its "
                       "negative, −log σ(β h) (positive, falling towards 0)."),
            KnownWrong("β outside the sigmoid", _dpo_beta_outside,
                       "β scales the margin *inside* the sigmoid, −log σ(β h): it is the scale of the implicit reward "
                       "β log π/π_ref, not a weight on the loss."),
            KnownWrong("reference not subtracted", _dpo_no_reference,
                       "You used the policy's log-probs alone. DPO's implicit reward is a log-*ratio* to the reference, "
                       "β log π(y|x)/π_ref(y|x): subtract the reference's log-probs."),
            KnownWrong("sum over pairs", _dpo_sum,
                       "You summed over the pairs; the loss is the mean, so that its size (and the learning rate that "
                       "suits it) does not depend on the batch size."),
            KnownWrong("reference not detached", _dpo_ref_not_detached,
                       "The value is right, but a gradient reaches the reference's log-probs. The reference is a fixed "
                       "target: its log-probs are constants of the objective, and no gradient may flow into whatever "
                       "computed them (given log-probs that still carry a graph into weights being trained, the loss "
                       "would also be lowered by moving those). Detach them: `ref_chosen_logps.detach()`."),
            KnownWrong("no gradient", under_no_grad(dpo.dpo_loss), _NO_GRAD_HINT),
            KnownWrong("log of sigmoid", _dpo_log_of_sigmoid,
                       "torch.log(torch.sigmoid(x)) underflows: for x = −300, σ(x) is 0 in float32 and the loss is "
                       "infinite. F.logsigmoid(x) computes the same function stably."),
            KnownWrong("log-ratios in place", _dpo_in_place,
                       "The value is right, but you subtracted the reference from the caller's `policy_chosen_logps` "
                       "in place (`-=`): the caller's log-probs (and what it logs from them) changed. Compute the "
                       "log-ratios into new tensors."),
        ],
        known_right=[KnownRight("softplus, TRL's grouping", _dpo_softplus),
                     KnownRight("float64", as_float64(dpo.dpo_loss))],
        atol=1e-5),
    Exercise(
        id="8.3", title="Implicit rewards and preference accuracy", reference=dpo.implicit_rewards, cases=_reward_cases,
        grad_wrt=_PAIR_ARGS,
        grad_help="The implicit rewards are what we *watch* (logged, averaged, compared), not something to train "
                  "through: detached, as TRL returns them, logging them cannot keep the graph alive or leak into a loss.",
        hint="chosen = β (π_w − ref_w), rejected = β (π_l − ref_l), both detached; accuracy = the share of pairs with "
             "chosen > rejected (strictly), as a float.",
        known_wrong=[
            KnownWrong("ties count as right", _rw_ties_count,
                       "A pair whose two rewards are equal is not ranked right: use chosen > rejected, not >=. At the "
                       "start of training the policy is the reference, every reward is 0, and the accuracy is 0, "
                       "not 1 (TRL's `rewards/accuracies` starts at 0 too)."),
            KnownWrong("rewards not detached", _rw_not_detached,
                       "The values are right, but the rewards still carry the policy's gradient. They are for watching "
                       "training: return them `.detach()`ed."),
            KnownWrong("no β", _rw_no_beta,
                       "The implicit reward is β times the log-ratio, r(x, y) = β log π(y|x)/π_ref(y|x)."),
            KnownWrong("reference not subtracted", _rw_no_reference,
                       "The implicit reward is a log-*ratio*: β (log π − log π_ref), not β log π."),
            KnownWrong("ratio upside down", _rw_inverted_ratio,
                       "You computed β log π_ref/π. The reward is positive where the policy made a response *more* "
                       "likely than the reference did: β (log π − log π_ref)."),
            KnownWrong("accuracy as a count", _rw_count,
                       "The accuracy is a share of pairs, between 0 and 1: take the mean of (chosen > rejected), not "
                       "the sum."),
            KnownWrong("accuracy as a 0-d tensor", _rw_tensor_accuracy,
                       "Return the accuracy as a Python float (`.item()`): a tensor prints as `tensor(0.5)` in the "
                       "cells that log it."),
            KnownWrong("a tolerance", _rw_tolerance,
                       "You counted a pair as right only when its reward margin exceeds a tolerance. Any lead, however "
                       "small, is a right ranking (TRL: chosen_rewards > rejected_rewards): compare exactly."),
            KnownWrong("log-ratios in place through .detach()", _rw_in_place,
                       "`.detach()` returns a view that shares memory with the caller's tensor, so `c -= …` and "
                       "`c *= β` overwrote the caller's policy log-probs. Compute new tensors: "
                       "`(beta * (policy_chosen_logps - ref_chosen_logps)).detach()`."),
        ],
        atol=1e-5),
    Exercise(
        id="8.4", title="The IPO loss", reference=dpo.ipo_loss, cases=_ipo_cases, grad_wrt=_PAIR_ARGS,
        hint="h = (π_w − ref_w) − (π_l − ref_l) (no β, reference detached); loss = mean of (h − 1/(2β))².",
        known_wrong=[
            KnownWrong("target 1/β", _ipo_target_one_over_beta,
                       "IPO's target margin is 1/(2β) (Azar et al. eq. 17; TRL's `(logits - 1/(2*beta))**2`), not 1/β."),
            KnownWrong("+ 1/(2β), or chosen and rejected swapped", _ipo_plus_target,
                       "Your loss pulls the margin towards −1/(2β), so the rejected response would win: either the "
                       "target has the wrong sign, (h + 1/(2β))², or h is the rejected log-ratio minus the chosen one "
                       "(the same function). h = (π_w − ref_w) − (π_l − ref_l) and the loss is (h − 1/(2β))²."),
            KnownWrong("β times h", _ipo_beta_inside,
                       "You squared β h − 1/2, which is β² (h − 1/(2β))²: the same minimum, but a loss β² times "
                       "smaller (a different effective learning rate). IPO's loss is (h − 1/(2β))², h without β."),
            KnownWrong("reference not subtracted", _ipo_no_reference,
                       "h is the margin of log-*ratios*: (π_w − ref_w) − (π_l − ref_l). Subtract the reference."),
            KnownWrong("sum over pairs", _ipo_sum,
                       "Take the mean over pairs, not the sum."),
            KnownWrong("reference not detached", _ipo_ref_not_detached,
                       "The value is right, but a gradient reaches the reference's log-probs: detach them, the "
                       "reference is frozen."),
            KnownWrong("no gradient", under_no_grad(dpo.ipo_loss), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("the square expanded", _ipo_expanded),
                     KnownRight("float64", as_float64(dpo.ipo_loss))],
        atol=1e-4, rtol=1e-5),
    Exercise(
        id="8.5", title="The SimPO loss", reference=dpo.simpo_loss, cases=_simpo_cases,
        grad_wrt=("policy_chosen_logps", "policy_rejected_logps"),
        hint="Average each response's log-prob over its own length, then −log σ(β (avg_w − avg_l) − γ), mean over pairs.",
        known_wrong=[
            KnownWrong("no length normalisation", _simpo_no_length,
                       "SimPO divides each response's log-prob by its own length, log π(y|x)/|y|: without it a longer "
                       "response has a lower reward only for being long."),
            KnownWrong("γ inside β", _simpo_gamma_inside,
                       "γ is the target reward margin and is subtracted *after* scaling by β: β (avg_w − avg_l) − γ. "
                       "Yours, β (avg_w − avg_l − γ), makes the margin β γ. (TRL's CPOTrainer writes it as "
                       "β (avg_w − avg_l − γ/β), the same thing.)"),
            KnownWrong("+ γ", _simpo_plus_gamma,
                       "The margin must *exceed* γ: subtract it, β (avg_w − avg_l) − γ."),
            KnownWrong("lengths swapped", _simpo_lens_swapped,
                       "Each response is normalised by its own length: the chosen log-prob by chosen_lens, the rejected "
                       "one by rejected_lens."),
            KnownWrong("one length for the pair", _simpo_total_length,
                       "You divided the difference by the pair's total length. SimPO averages each response over its own "
                       "length first: log π(y_w)/|y_w| − log π(y_l)/|y_l|."),
            KnownWrong("sum over pairs", _simpo_sum, "Take the mean over pairs, not the sum."),
            KnownWrong("log of sigmoid", _simpo_log_of_sigmoid,
                       "torch.log(torch.sigmoid(z)) is −inf once σ(z) underflows to 0 (z below about −88 in float32), "
                       "and its gradient is NaN: a pair the policy ranks badly would wreck the step. Use "
                       "F.logsigmoid(z), which stays finite (≈ z for very negative z)."),
            KnownWrong("averages in place", _simpo_in_place,
                       "The value is right, but you divided the caller's log-probs in place (`/=`). Compute the "
                       "averages into new tensors."),
            KnownWrong("no gradient", under_no_grad(dpo.simpo_loss), _NO_GRAD_NO_REFERENCE_HINT),
        ],
        known_right=[KnownRight("TRL's CPOTrainer form, γ/β inside", _simpo_trl_form),
                     KnownRight("float64", as_float64(dpo.simpo_loss))],
        atol=1e-5),
    Exercise(
        id="8.6", title="RPO's SFT term", reference=dpo.chosen_nll, cases=_nll_cases, grad_wrt=("policy_chosen_logps",),
        hint="Each chosen response's NLL per token is −log π(y_w|x) / |y_w|; return its mean over the pairs.",
        known_wrong=[
            KnownWrong("no length normalisation", _nll_no_length,
                       "You averaged −log π(y_w|x) over pairs without dividing by each response's length: a long "
                       "response would weigh more only for being long. Divide by chosen_lens first (a per-token NLL)."),
            KnownWrong("wrong sign", _nll_sign,
                       "log π / |y| is a log-*likelihood*, at most 0; minimising it would make the chosen responses "
                       "*less* likely. The NLL is its negative."),
            KnownWrong("sum over pairs", _nll_sum,
                       "Take the mean over pairs, not the sum, so that α means the same at any batch size."),
            KnownWrong("one mean over all the batch's tokens", _nll_token_mean,
                       "−Σ log π / Σ |y| weighs every token of the batch the same (TRL computes its `nll_loss` this way), "
                       "so long responses count more. This function is the mean over pairs of each response's own "
                       "per-token NLL, −log π(y_w|x)/|y_w| (Pang et al.)."),
            KnownWrong("divides in place", _nll_in_place,
                       "The value is right, but you divided the caller's `policy_chosen_logps` in place (`/=`): the "
                       "DPO term, computed from the same tensor, would then see per-token averages. Compute "
                       "`policy_chosen_logps / chosen_lens` into a new tensor."),
            KnownWrong("no gradient", under_no_grad(dpo.chosen_nll),
                       "The value is right but the term carries no gradient: it was computed under `torch.no_grad()` "
                       "or detached, so it could not keep the chosen responses likely."),
        ],
        known_right=[KnownRight("float64", _nll_via_mean_of_ratio)],
        atol=1e-5),
    Exercise(
        id="8.7", title="The ORPO loss", reference=dpo.orpo_loss, cases=_orpo_cases,
        grad_wrt=("policy_chosen_logps", "policy_rejected_logps"),
        hint="Average each response's log-prob over its own length (log P); log odds = log P − log(1 − P) with "
             "log(1 − P) = torch.log(-torch.expm1(log P)); loss = mean of −log π(y_w)/|y_w| plus λ times the mean of "
             "−log σ(log odds_w − log odds_l).",
        known_wrong=[
            KnownWrong("odds of the whole sequence", _orpo_unnormalised,
                       "ORPO's odds use the length-normalised likelihood, P(y|x) = exp(log π(y|x)/|y|) (Hong et al. "
                       "eq. 4; TRL averages the log-probs too): divide each summed log-prob by its response's length "
                       "before taking the odds. Odds of whole sequences make every long response look unlikely."),
            KnownWrong("log(P) − log(1 − P) with P = exp(·)", _orpo_naive,
                       "Right on ordinary values, but P = exp(log P) underflows to 0 when the mean log-prob is below "
                       "about −104 in float32 (about −17 in float16), and log 0 = −inf. Work in log space: "
                       "log odds = log P − log(1 − P) with log(1 − P) = torch.log(-torch.expm1(log P)) "
                       "(or torch.log1p(-torch.exp(log P)), as TRL writes it)."),
            KnownWrong("log of sigmoid", _orpo_log_of_sigmoid,
                       "torch.log(torch.sigmoid(x)) is −inf once σ(x) underflows (x below about −88 in float32): a pair "
                       "whose chosen response is far less likely than the rejected one would give an infinite loss. "
                       "Use F.logsigmoid(x)."),
            KnownWrong("odds-ratio term with the wrong sign", _orpo_term_sign,
                       "log σ(log OR) is the log-likelihood of ranking the chosen response higher; the loss adds its "
                       "*negative*, λ · (−log σ(log odds_w − log odds_l)), so minimising it widens the odds ratio."),
            KnownWrong("chosen and rejected swapped", _orpo_swapped,
                       "Your odds ratio favours the rejected response: it is odds(y_w|x)/odds(y_l|x), "
                       "log odds_w − log odds_l, inside −log σ(·)."),
            KnownWrong("probability ratio instead of odds ratio", _orpo_probability_ratio,
                       "You compared log P_w − log P_l, a ratio of probabilities (CPO's and SimPO's margin). ORPO "
                       "compares *odds*, P/(1 − P): subtract log(1 − P) from each log P first."),
            KnownWrong("no λ", _orpo_no_lambda,
                       "λ weighs the odds-ratio term against the SFT term: L_SFT + λ · L_OR (the paper uses λ = 0.1)."),
            KnownWrong("λ on the SFT term", _orpo_lambda_on_sft,
                       "λ multiplies the odds-ratio term, not the SFT term: L_SFT + λ · L_OR."),
            KnownWrong("no SFT term", _orpo_no_sft,
                       "ORPO has no reference model: its anchor is the SFT term, the chosen responses' NLL per token "
                       "(`chosen_nll`, exercise 8.6). Add it: L_SFT + λ · L_OR."),
            KnownWrong("SFT term not per token", _orpo_nll_per_sequence,
                       "The SFT term is the chosen responses' NLL *per token*, −log π(y_w|x)/|y_w|, averaged over pairs "
                       "(exercise 8.6): divide by chosen_lens."),
            KnownWrong("sum over pairs", _orpo_sum,
                       "Take the mean over pairs, not the sum, so that λ and the learning rate mean the same at any "
                       "batch size."),
            KnownWrong("averages in place", _orpo_in_place,
                       "The value is right, but you divided the caller's log-probs in place (`/=`): the training loop "
                       "logs from the same tensors. Compute the averages into new tensors."),
            KnownWrong("no gradient", under_no_grad(dpo.orpo_loss), _NO_GRAD_NO_REFERENCE_HINT),
        ],
        known_right=[KnownRight("TRL's log1p(−exp(·)) form", _orpo_trl_form),
                     KnownRight("float64", as_float64(dpo.orpo_loss))],
        atol=1e-5),
    Exercise(
        id="8.8", title="The KTO loss", reference=dpo.kto_loss, cases=_kto_cases, grad_wrt=_KTO_ARGS,
        grad_help="Only the policy's log-probs of the examples may carry a gradient. The reference's log-probs are "
                  "constants of the objective, and so is the reference point z0: KTO treats it as a fixed baseline "
                  "(TRL computes it without gradients), so that an example is pushed by its own log-ratio only.",
        hint="r = policy_logps − ref_logps (reference detached); z0 = mean of policy_kl_logps − ref_kl_logps, clamped at "
             "0, detached; desirable: λ_D (1 − σ(β (r − z0))), undesirable: λ_U (1 − σ(β (z0 − r))); the mean over "
             "all examples.",
        known_wrong=[
            KnownWrong("z0 not detached", _kto_z0_not_detached,
                       "The value is right, but a gradient flows through the reference point z0 into the mismatched "
                       "rows' log-probs. z0 is a baseline, a constant of each step: `.detach()` it (TRL computes it "
                       "without gradients), or every example would also push the policy's KL estimate around."),
            KnownWrong("λ_D and λ_U swapped", _kto_lambdas_swapped,
                       "λ_D weighs the *desirable* examples and λ_U the undesirable ones; yours are the other way round."),
            KnownWrong("wrong side for undesirable examples", _kto_undesirable_wrong_side,
                       "For an undesirable example the value is σ(β (z0 − r)): its loss falls as its log-ratio r falls "
                       "*below* z0. Yours, 1 − σ(β (r − z0)), rewards raising it, as for a desirable one."),
            KnownWrong("z0 not clamped at 0", _kto_z0_not_clamped,
                       "z0 estimates KL(π ‖ π_ref), which is never negative; the batch estimate can be (here −1.5), so "
                       "clamp it: `.clamp(min=0)` (Ethayarajh et al.; TRL's `kl.clamp(min=0)`)."),
            KnownWrong("no reference point", _kto_no_reference_point,
                       "KTO compares each log-ratio with a reference point z0, the batch's estimate of KL(π ‖ π_ref) "
                       "from the mismatched rows: σ(β (r − z0)), not σ(β r)."),
            KnownWrong("z0 from the examples themselves", _kto_z0_from_the_batch,
                       "z0 comes from the *mismatched* rows (each prompt with another example's response: "
                       "policy_kl_logps − ref_kl_logps), not from the examples being trained on, whose log-ratios the "
                       "loss is moving."),
            KnownWrong("−log σ instead of 1 − σ", _kto_log_sigmoid,
                       "KTO's value function is σ itself, bounded: L = λ_y − v with v = λ_D σ(β (r − z0)) for desirable "
                       "examples, so the loss is λ_D (1 − σ(·)), which saturates. −log σ(·) is DPO-like and keeps "
                       "pushing examples that are already far on the right side."),
            KnownWrong("reference not detached", _kto_ref_not_detached,
                       "The value is right, but a gradient reaches the reference's log-probs: they are constants of the "
                       "objective, detach them (`ref_logps.detach()`)."),
            KnownWrong("mean of each label, added", _kto_class_means,
                       "You averaged the desirable and the undesirable losses separately and added the two means. KTO's "
                       "loss is one expectation over the examples (TRL: one mean over all of them); the weights λ_D and "
                       "λ_U are what balances the two kinds."),
            KnownWrong("log-ratios in place", _kto_in_place,
                       "The value is right, but you subtracted the reference from the caller's `policy_logps` in place "
                       "(`-=`). Compute the log-ratios into a new tensor."),
            KnownWrong("no gradient", under_no_grad(dpo.kto_loss), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("TRL's form, desirable rows first", _kto_trl_form),
                     KnownRight("float64", as_float64(dpo.kto_loss))],
        atol=1e-5),
)
