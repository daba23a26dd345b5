"""Chapter 09 exercises: the per-token reward, GAE over response tokens, the clipped policy and value losses with
masks, and the critic's explained variance."""

from __future__ import annotations

import numpy as np
import torch

from llmcourse import ppo_rlhf as pr
from llmcourse.logprobs import masked_mean, masked_sum
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


def _random_mask(rng: np.random.Generator, B: int, T: int) -> torch.Tensor:
    """(B, T) bool: each row's response is a block after 1–3 prompt columns, with 1–3 padding columns after it."""
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        lo = int(rng.integers(1, 4))
        hi = T - int(rng.integers(1, 4))                               # at least one padding column
        mask[b, lo:max(hi, lo + 1)] = True
    return _t(mask, torch.bool)


_HAND_MASK = [[False, False, True, True, True, False], [False, True, True, False, False, False]]

# --------------------------------------------------------------------------- 9.1 the per-token reward


def _reward_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(score=_t([2.0, -1.0]), logp=_t([[0.0, 0.0, -1.0, -2.0, -0.5, 0.0], [0.0, -0.2, -0.4, 0.0, 0.0, 0.0]]),
                ref_logp=_t([[0.0, 0.0, -2.0, -1.0, -0.5, 0.0], [0.0, -0.2, -0.1, 0.0, 0.0, 0.0]]),
                mask=_t(_HAND_MASK, torch.bool), beta=0.5)
    cases = [hand]
    for beta in (0.05, 0.2, 1.0, 0.1):
        B, T = int(rng.integers(2, 6)), int(rng.integers(7, 13))
        cases.append(dict(score=_t(rng.normal(0, 2, B)), logp=_t(-rng.exponential(1.0, (B, T))),
                          ref_logp=_t(-rng.exponential(1.0, (B, T))), mask=_random_mask(rng, B, T), beta=beta))
    return cases


def _rw_add(rewards, mask, score, last):
    rows = torch.arange(len(score))
    rewards = rewards.clone()
    rewards[rows, last] += score
    return rewards


def _kl_penalty(logp, ref_logp, mask, beta):
    return torch.where(mask, -beta * (logp - ref_logp), torch.zeros_like(logp))


def _rw_first_token(score, logp, ref_logp, mask, beta):
    first = mask.float().argmax(dim=1)                                 # the first response column
    return _rw_add(_kl_penalty(logp, ref_logp, mask, beta), mask, score, first)


def _rw_one_past(score, logp, ref_logp, mask, beta):
    last = mask.long().sum(dim=1) + mask.float().argmax(dim=1)         # first + length: one column too far
    return _rw_add(_kl_penalty(logp, ref_logp, mask, beta), mask, score, last)


def _rw_length_minus_one(score, logp, ref_logp, mask, beta):
    rewards = _kl_penalty(logp, ref_logp, mask, beta)
    last = mask.long().sum(dim=1) - 1                                  # the response's length − 1, not a column
    rewards[torch.arange(len(score)), last] += score
    return rewards


def _rw_all_rows(score, logp, ref_logp, mask, beta):
    rewards = _kl_penalty(logp, ref_logp, mask, beta)
    rewards[:, pr.last_response_column(mask)] += score                 # every row, at every row's last column
    return rewards


def _rw_last_column(score, logp, ref_logp, mask, beta):
    rewards = _kl_penalty(logp, ref_logp, mask, beta)
    rewards[:, -1] += score                                            # the row's end, padding or not
    return rewards


def _rw_no_mask(score, logp, ref_logp, mask, beta):
    rewards = -beta * (logp - ref_logp)                                # penalty on prompt and padding too
    return _rw_add(rewards, mask, score, pr.last_response_column(mask))


def _rw_plus_kl(score, logp, ref_logp, mask, beta):
    return _rw_add(_kl_penalty(ref_logp, logp, mask, beta), mask, score, pr.last_response_column(mask))


def _rw_no_beta(score, logp, ref_logp, mask, beta):
    return _rw_add(_kl_penalty(logp, ref_logp, mask, 1.0), mask, score, pr.last_response_column(mask))


def _rw_score_everywhere(score, logp, ref_logp, mask, beta):
    rewards = _kl_penalty(logp, ref_logp, mask, beta)
    return torch.where(mask, rewards + score.unsqueeze(1), rewards)


def _rw_score_replaces_kl(score, logp, ref_logp, mask, beta):
    rewards = _kl_penalty(logp, ref_logp, mask, beta)
    rewards[torch.arange(len(score)), pr.last_response_column(mask)] = score    # = instead of +=
    return rewards


def _rw_k3(score, logp, ref_logp, mask, beta):
    log_r = ref_logp - logp
    rewards = torch.where(mask, -beta * (log_r.exp() - 1 - log_r), torch.zeros_like(logp))
    return _rw_add(rewards, mask, score, pr.last_response_column(mask))


def _rw_in_place(score, logp, ref_logp, mask, beta):
    logp -= ref_logp                                                   # the KL written over the caller's log-probs
    rewards = torch.where(mask, -beta * logp, torch.zeros_like(logp))
    return _rw_add(rewards, mask, score, pr.last_response_column(mask))


def _rw_scatter(score, logp, ref_logp, mask, beta):
    kl = (logp - ref_logp) * mask
    last = (mask.long().cumsum(dim=1)).argmax(dim=1, keepdim=True)    # first column where the count is full
    at_end = torch.zeros_like(logp).scatter(1, last, score.unsqueeze(1))
    return -beta * kl + at_end


# --------------------------------------------------------------------------- 9.2 GAE over response tokens


def _gae_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(rewards=_t([[9.0, 9.0, -0.1, 0.2, 1.0, 9.0], [9.0, 0.5, 2.0, 9.0, 9.0, 9.0]]),
                values=_t([[5.0, 5.0, 1.0, 0.5, 0.25, 5.0], [5.0, 1.0, 1.0, 5.0, 5.0, 5.0]]),
                mask=_t(_HAND_MASK, torch.bool), gamma=1.0, lam=0.5)
    cases = [hand]
    for gamma, lam in ((1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.8, 0.0), (0.95, 0.9)):
        B, T = int(rng.integers(2, 5)), int(rng.integers(7, 12))
        cases.append(dict(rewards=_t(rng.normal(0, 1, (B, T))), values=_t(rng.normal(0, 1, (B, T))),
                          mask=_random_mask(rng, B, T), gamma=gamma, lam=lam))
    return cases


def _gae_rows(rewards, values, mask, gamma, lam, *, next_value_past_end=False, use_gamma=True, use_lam=True,
              forwards=False, mask_advantages=True):
    """One row at a time, over the row's columns (the variants below switch one thing)."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    for b in range(B):
        cols = mask[b].nonzero().flatten().tolist()
        order = range(len(cols)) if forwards else reversed(range(len(cols)))
        carry = 0.0
        for j in order:
            t = cols[j]
            if forwards:
                nxt = values[b, cols[j - 1]] if j > 0 else 0.0
            elif j + 1 < len(cols):
                nxt = values[b, cols[j + 1]]
            else:
                nxt = values[b, t + 1] if next_value_past_end and t + 1 < T else 0.0
            delta = rewards[b, t] + gamma * nxt - values[b, t]
            carry = delta + (gamma if use_gamma else 1.0) * (lam if use_lam else 1.0) * carry
            adv[b, t] = carry
    returns = torch.where(mask, adv + values, torch.zeros_like(values))
    return adv, returns


def _gae_loop(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_rows(rewards, values, mask, gamma, lam)


def _gae_float64(rewards, values, mask, gamma=1.0, lam=0.95):
    return tuple(x.double() for x in pr.gae(rewards.double(), values.double(), mask, gamma, lam))


def _gae_past_end(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_rows(rewards, values, mask, gamma, lam, next_value_past_end=True)


def _gae_no_gamma_in_trace(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_rows(rewards, values, mask, gamma, lam, use_gamma=False)


def _gae_no_lambda(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_rows(rewards, values, mask, gamma, lam, use_lam=False)


def _gae_forwards(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_rows(rewards, values, mask, gamma, lam, forwards=True)


def _gae_returns_to_go(rewards, values, mask, gamma=1.0, lam=0.95):
    adv, _ = pr.gae(rewards, values, mask, gamma, lam)
    zero = torch.zeros_like(rewards)
    ret, running = zero.clone(), torch.zeros(rewards.size(0))
    r = torch.where(mask, rewards, zero)
    for t in reversed(range(rewards.size(1))):
        running = r[:, t] + gamma * running
        ret[:, t] = running
    return adv, torch.where(mask, ret, zero)


def _gae_whole_row(rewards, values, mask, gamma=1.0, lam=0.95):
    """The recursion over every column with rewards and values masked, the advantages left unmasked."""
    zero = torch.zeros_like(rewards)
    r, v = torch.where(mask, rewards, zero), torch.where(mask, values, zero)
    adv, carry, nxt = zero.clone(), torch.zeros(rewards.size(0)), torch.zeros(rewards.size(0))
    for t in reversed(range(rewards.size(1))):
        carry = r[:, t] + gamma * nxt - v[:, t] + gamma * lam * carry
        adv[:, t], nxt = carry, v[:, t]
    return adv, torch.where(mask, adv + v, zero)


def _gae_unmasked_values(rewards, values, mask, gamma=1.0, lam=0.95):
    """The recursion over every column with only the rewards masked: the padding's values are bootstrapped."""
    r = torch.where(mask, rewards, torch.zeros_like(rewards))
    adv, carry, nxt = torch.zeros_like(rewards), torch.zeros(rewards.size(0)), torch.zeros(rewards.size(0))
    for t in reversed(range(rewards.size(1))):
        carry = r[:, t] + gamma * nxt - values[:, t] + gamma * lam * carry
        adv[:, t], nxt = carry, values[:, t]
    adv = torch.where(mask, adv, torch.zeros_like(adv))
    return adv, torch.where(mask, adv + values, torch.zeros_like(values))


def _gae_in_place(rewards, values, mask, gamma=1.0, lam=0.95):
    adv, returns = pr.gae(rewards, values, mask, gamma, lam)
    rewards.copy_(adv)                                                 # the advantages written over the rewards
    return rewards, returns


# --------------------------------------------------------------------------- 9.3 the clipped policy loss

_POLICY_ARGS = ("logp", "old_logp", "advantages")


def _policy_cases(rng: np.random.Generator) -> list[dict]:
    # the hand case: ratios 1.5, 0.5, 1.5, 0.5 against advantages +, +, −, −, and a padding column
    hand = dict(logp=torch.log(_t([[1.5, 0.5, 1.5, 0.5, 3.0]])), old_logp=torch.zeros(1, 5),
                advantages=_t([[1.0, 1.0, -1.0, -1.0, 5.0]]), mask=_t([[True, True, True, True, False]], torch.bool),
                clip_eps=0.2)
    cases = [hand]
    for eps in (0.2, 0.1, 0.3, 0.2):
        B, T = int(rng.integers(2, 5)), int(rng.integers(6, 11))
        old = -rng.exponential(1.0, (B, T))
        cases.append(dict(logp=_t(old + rng.normal(0, 0.3, (B, T))), old_logp=_t(old),
                          advantages=_t(rng.normal(0, 1, (B, T))), mask=_random_mask(rng, B, T), clip_eps=eps))
    return cases


def _pl_max(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    per_token = torch.min(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps))
    return masked_mean(per_token, mask)


def _pl_upper_clip_only(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    per_token = torch.max(-a * ratio, -a * torch.clamp(ratio, max=1 + clip_eps))
    return masked_mean(per_token, mask)


def _pl_log_space_clip(logp, old_logp, advantages, mask, clip_eps=0.2):
    log_ratio = logp - old_logp.detach()
    a = advantages.detach()
    per_token = torch.max(-a * log_ratio.exp(), -a * torch.clamp(log_ratio, -clip_eps, clip_eps).exp())
    return masked_mean(per_token, mask)


def _pl_no_exp(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = logp - old_logp.detach()                                   # a log-ratio, not a ratio
    a = advantages.detach()
    return masked_mean(torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)), mask)


def _pl_prob_ratio(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = logp / old_logp.detach()                                   # a ratio of log-probs
    a = advantages.detach()
    return masked_mean(torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)), mask)


def _pl_per_token(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    return torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps))


def _pl_sum(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    per_token = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps))
    return (per_token * mask).sum()


def _pl_no_mask(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    return torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)).mean()


def _pl_row_means(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    per_token = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps))
    return masked_mean(per_token, mask, dim=1).mean()


def _pl_plus_sign(logp, old_logp, advantages, mask, clip_eps=0.2):
    return -pr.policy_loss(logp, old_logp, advantages, mask, clip_eps)


def _pl_not_detached(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp)
    per_token = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps))
    return masked_mean(per_token, mask)


def _pl_multiply_mask(logp, old_logp, advantages, mask, clip_eps=0.2):
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return -(surrogate * mask).sum() / mask.sum()                      # TRL's masked_mean


# --------------------------------------------------------------------------- 9.4 the clipped value loss

_VALUE_ARGS = ("values", "old_values", "returns")


def _value_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(values=_t([[2.0, 0.1, -1.0]]), old_values=_t([[0.0, 0.0, 0.0]]), returns=_t([[1.0, 1.0, 5.0]]),
                mask=_t([[True, True, False]], torch.bool), clip_eps=0.5)
    # a case where clipping around the return and clipping around the old value differ in both directions
    far = dict(values=_t([[3.0, -2.0, 0.5, 4.0]]), old_values=_t([[1.0, 0.0, 0.4, 0.0]]),
               returns=_t([[2.0, -0.5, 1.0, 9.0]]), mask=_t([[True, True, True, False]], torch.bool), clip_eps=0.2)
    cases = [hand, far]
    for eps in (0.2, 0.5, 0.1):
        B, T = int(rng.integers(2, 5)), int(rng.integers(6, 11))
        old = rng.normal(0, 1, (B, T))
        cases.append(dict(values=_t(old + rng.normal(0, 0.5, (B, T))), old_values=_t(old),
                          returns=_t(old + rng.normal(0, 1, (B, T))), mask=_random_mask(rng, B, T), clip_eps=eps))
    return cases


def _vl(values, old_values, returns, mask, clip_eps, *, combine=torch.max, half=True,
        reduce="mean", detach=True):
    old = old_values.detach() if detach else old_values
    target = returns.detach() if detach else returns
    v_clipped = old + torch.clamp(values - old, -clip_eps, clip_eps)
    per_token = combine((values - target) ** 2, (v_clipped - target) ** 2)
    if reduce == "sum":
        total = masked_sum(per_token, mask)
    elif reduce == "all":
        total = per_token.mean()
    else:
        total = masked_mean(per_token, mask)
    return 0.5 * total if half else total


def _vl_min(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, combine=torch.min)


def _vl_unclipped(values, old_values, returns, mask, clip_eps=0.2):
    return 0.5 * masked_mean((values - returns.detach()) ** 2, mask)


def _vl_clipped_only(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, combine=lambda a, b: b)


def _vl_no_half(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, half=False)


def _vl_sum(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, reduce="sum")


def _vl_no_mask(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, reduce="all")


def _vl_not_detached(values, old_values, returns, mask, clip_eps=0.2):
    return _vl(values, old_values, returns, mask, clip_eps, detach=False)


def _vl_mse(values, old_values, returns, mask, clip_eps=0.2):
    return torch.nn.functional.mse_loss(values[mask], returns[mask])


def _vl_multiply_mask(values, old_values, returns, mask, clip_eps=0.2):
    v_clipped = old_values.detach() + torch.clamp(values - old_values.detach(), -clip_eps, clip_eps)
    losses = torch.max((values - returns.detach()) ** 2, (v_clipped - returns.detach()) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


def _vl_clamp_bounds(values, old_values, returns, mask, clip_eps=0.2):
    old, target = old_values.detach(), returns.detach()
    v_clipped = torch.clamp(values, old - clip_eps, old + clip_eps)
    return 0.5 * masked_mean(torch.max((values - target) ** 2, (v_clipped - target) ** 2), mask)


# --------------------------------------------------------------------------- 9.5 explained variance


def _ev_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(values=_t([[1.0, 2.0, 9.0]]), returns=_t([[1.0, 3.0, 0.0]]), mask=_t([[True, True, False]], torch.bool))
    # a critic with a constant offset: explained variance 1, but not R²
    offset = dict(values=_t([[0.0, 2.0, 3.0, 4.0, 0.0], [0.0, 0.0, 5.0, 6.0, -3.0]]),
                  returns=_t([[0.0, 1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 4.0, 5.0, 8.0]]),
                  mask=_t([[False, True, True, True, False], [False, False, True, True, False]], torch.bool))
    cases = [hand, offset]
    for noise in (0.3, 1.0, 2.0, 0.5):
        B, T = int(rng.integers(2, 5)), int(rng.integers(6, 11))
        returns = rng.normal(0, 1, (B, T))
        values = returns + rng.normal(0.3, noise, (B, T))
        values[:, -1] += 20.0                                          # the padding's values are far off
        cases.append(dict(values=_t(values), returns=_t(returns), mask=_random_mask(rng, B, T)))
    return cases


def _ev_no_mask(values, returns, mask):
    return float(1 - (returns - values).var(unbiased=False) / returns.var(unbiased=False))


def _ev_over_values(values, returns, mask):
    v, r = values[mask], returns[mask]
    return float(1 - (r - v).var(unbiased=False) / v.var(unbiased=False))


def _ev_no_one_minus(values, returns, mask):
    v, r = values[mask], returns[mask]
    return float((r - v).var(unbiased=False) / r.var(unbiased=False))


def _ev_r2(values, returns, mask):
    v, r = values[mask], returns[mask]
    return float(1 - ((r - v) ** 2).mean() / r.var(unbiased=False))


def _ev_var_ratio(values, returns, mask):
    v, r = values[mask], returns[mask]
    return float(v.var(unbiased=False) / r.var(unbiased=False))


def _ev_unbiased(values, returns, mask):
    v, r = values[mask], returns[mask]
    return (1 - (r - v).var() / r.var()).item()                        # n − 1 in both: the same ratio


def _ev_tensor(values, returns, mask):
    v, r = values[mask].double(), returns[mask].double()
    return 1 - (r - v).var(unbiased=False) / r.var(unbiased=False)   # the right number, left a 0-d tensor


def _ev_numpy(values, returns, mask):
    v, r = values[mask].numpy(), returns[mask].numpy()
    return 1 - np.var(r - v) / np.var(r)


# --------------------------------------------------------------------------- registry

register(
    Exercise(
        id="9.1", title="The per-token reward", reference=pr.token_rewards, cases=_reward_cases,
        hint="rewards = −β (logp − ref_logp) where mask is True, 0 elsewhere; then add score[b] at row b's last "
             "response column (the last True column of mask[b]). Return a new (B, T) tensor.",
        known_wrong=[
            KnownWrong("score on the first response token", _rw_first_token,
                       "The reward model scores the whole response, so its score belongs to the response's *last* "
                       "token, the last True column of each mask row (`argmax` of a bool mask finds the first one)."),
            KnownWrong("score one column too far", _rw_one_past,
                       "Your score lands one column after the last response token, on the padding, where the mask "
                       "drops it. The last response column is first + length − 1 (or the largest column where mask "
                       "is True)."),
            KnownWrong("length − 1 as the column", _rw_length_minus_one,
                       "`mask.sum(1) - 1` is the position of the last token *within the response*, but each row starts "
                       "with its prompt (mask False there): the response's last column is its first column + length − 1, "
                       "or the largest column where mask is True. (Chapter 07's `mask.sum() - 1` worked because that "
                       "mask covered the prompt too.)"),
            KnownWrong("score added with rewards[:, last]", _rw_all_rows,
                       "`rewards[:, last] += score` indexes every row at all the rows' last columns (a B × B block), "
                       "so each score lands in every row. Pair each row with its own column: "
                       "`rewards[torch.arange(B), last] += score`."),
            KnownWrong("score on the row's last column", _rw_last_column,
                       "You added the score at column −1, the end of the padded row. Rows are right-padded, so each "
                       "response ends at its own column: the last True column of its mask row."),
            KnownWrong("no mask on the KL penalty", _rw_no_mask,
                       "The KL penalty belongs to the response's tokens only: the prompt and the padding were not "
                       "sampled by the policy. Set the reward to 0 where mask is False (`torch.where`)."),
            KnownWrong("KL with the wrong sign", _rw_plus_kl,
                       "The penalty is −β (log π − log π_ref): a token the policy likes more than the reference "
                       "(log π > log π_ref) costs reward. Yours rewards moving away from the reference (you wrote "
                       "+β (logp − ref_logp), or −β (ref_logp − logp))."),
            KnownWrong("no β", _rw_no_beta,
                       "Scale the KL by β: −β (logp − ref_logp). Without it the penalty outweighs the score."),
            KnownWrong("score on every response token", _rw_score_everywhere,
                       "The score is added once, at the last response token; GAE carries it back to the earlier "
                       "tokens (with γ = 1, every token's return includes it). Added at every token it counts "
                       "as many times as the response is long."),
            KnownWrong("score replaces the last token's KL", _rw_score_replaces_kl,
                       "At the last token the reward is the score *plus* that token's −β KL: use `+=`, not `=`."),
            KnownWrong("k3 instead of k1", _rw_k3,
                       "You used the k3 estimator (r − 1) − log r. It is a valid choice (TRL's `kl_estimator=\"k3\"`), "
                       "but InstructGPT's reward, and this exercise, use k1 = logp − ref_logp."),
            KnownWrong("KL written into logp", _rw_in_place,
                       "The value is right, but `logp -= ref_logp` changed the caller's log-probs in place: the "
                       "loop still needs them as the old log-probs of the ratio. Compute `logp - ref_logp` into a "
                       "new tensor."),
        ],
        known_right=[KnownRight("scatter at the cumulative-count argmax", _rw_scatter),
                     KnownRight("float64", as_float64(pr.token_rewards))],
        atol=1e-5),
    Exercise(
        id="9.2", title="GAE over response tokens", reference=pr.gae, cases=_gae_cases,
        hint="Per row, backwards over the response columns: δ_t = r_t + γ V_next − V_t with V_next = 0 after the last "
             "response token; A_t = δ_t + γ λ A_next. Returns R = A + V. Both 0 outside the mask.",
        known_wrong=[
            KnownWrong("bootstraps past the end", _gae_past_end,
                       "After the last response token the episode is over: V_next = 0 there. You took the value of "
                       "the next column, a padding position that no state lies behind."),
            KnownWrong("values outside the mask used", _gae_unmasked_values,
                       "You ran the recursion over the whole row with the padding's and prompt's values in it, so "
                       "the last response token bootstraps from a padding value. Set the values to 0 outside the "
                       "mask (or stop at each row's last response column)."),
            KnownWrong("advantages not masked", _gae_whole_row,
                       "Your advantages are not 0 outside the response (the prompt column before it gets γ V of the "
                       "first response token). Mask them too: only response tokens have advantages."),
            KnownWrong("γ missing from the trace", _gae_no_gamma_in_trace,
                       "The trace decays by γλ, not λ alone: A_t = δ_t + γ λ A_{t+1}."),
            KnownWrong("λ missing", _gae_no_lambda,
                       "A_t = δ_t + γ λ A_{t+1}: without λ you get the Monte-Carlo advantage (λ = 1) whatever λ is."),
            KnownWrong("forwards in time", _gae_forwards,
                       "GAE runs backwards: A_t needs A_{t+1}, so start at the last response token and walk to the "
                       "first."),
            KnownWrong("returns as rewards-to-go", _gae_returns_to_go,
                       "The value target is R_t = A_t + V_t (TRL's `returns = advantages + values`). The plain sum of "
                       "future rewards is that only at λ = 1."),
            KnownWrong("advantages written into rewards", _gae_in_place,
                       "The value is right, but you wrote the advantages into the caller's `rewards` in place. "
                       "Allocate new tensors (`torch.zeros_like`)."),
        ],
        known_right=[KnownRight("a loop over each row's response columns (TRL's)", _gae_loop),
                     KnownRight("float64", _gae_float64)],
        atol=1e-5),
    Exercise(
        id="9.3", title="The clipped policy loss per token", reference=pr.policy_loss, cases=_policy_cases,
        grad_wrt=_POLICY_ARGS,
        hint="ratio = exp(logp − old_logp); per token max(−A·ratio, −A·clamp(ratio, 1−ε, 1+ε)); the mean over the "
             "masked tokens of the whole batch. Detach old_logp and the advantages.",
        known_wrong=[
            KnownWrong("min instead of max", _pl_max,
                       "The loss is minus PPO's pessimistic bound: per token max(−ρA, −clip(ρ)A) = −min(ρA, clip(ρ)A). "
                       "With min of the negatives you took the optimistic one, and the clipping no longer stops a "
                       "ratio that has already moved far in the advantage's direction."),
            KnownWrong("ratio clipped on one side only", _pl_upper_clip_only,
                       "Clip the ratio on both sides, clamp(ρ, 1 − ε, 1 + ε): for a negative advantage it is the lower "
                       "bound 1 − ε that stops the update."),
            KnownWrong("log-ratio clipped to ±ε", _pl_log_space_clip,
                       "You clipped the log-ratio to [−ε, ε], so the ratio to [e^−ε, e^ε]. PPO clips the ratio itself "
                       "to [1 − ε, 1 + ε]."),
            KnownWrong("log-ratio instead of ratio", _pl_no_exp,
                       "ρ = π/π_old = exp(logp − old_logp): take the exp of the difference of log-probs."),
            KnownWrong("ratio of log-probs", _pl_prob_ratio,
                       "The ratio is of probabilities, π/π_old = exp(logp − old_logp), not logp / old_logp."),
            KnownWrong("no mean (per-token losses)", _pl_per_token,
                       "Return one number: the mean of the per-token losses over the masked tokens."),
            KnownWrong("masked sum", _pl_sum,
                       "Take the mean over the response tokens, not the sum: the loss (and the step) would grow with "
                       "the batch and the responses' length."),
            KnownWrong("no mask", _pl_no_mask,
                       "Only response tokens count: the prompt and the padding were not chosen by the policy. Average "
                       "over the masked tokens (`masked_mean(x, mask)`)."),
            KnownWrong("mean of per-response means", _pl_row_means,
                       "You averaged each response over its own tokens, then over responses, so a short response's "
                       "tokens weigh more (GRPO's choice). This loss is the token-level mean over all response tokens "
                       "of the batch, as TRL's PPO takes it: `masked_mean(x, mask)` without `dim`."),
            KnownWrong("wrong sign", _pl_plus_sign,
                       "You return PPO's objective, which is to be *maximised*. The loss to minimise is its negative: "
                       "per token max(−ρA, −clip(ρ)A)."),
            KnownWrong("old log-probs or advantages not detached", _pl_not_detached,
                       "The value is right, but a gradient reaches `old_logp` or `advantages`. Both are data of the "
                       "rollout: detach them, so that the loss moves only the policy (and not, through the "
                       "advantages, the critic)."),
            KnownWrong("no gradient", under_no_grad(pr.policy_loss),
                       "The value is right but the loss carries no gradient: it was computed under `torch.no_grad()` "
                       "or detached on the way, so training with it would change nothing."),
        ],
        known_right=[KnownRight("−min(ρA, clip(ρ)A), mask multiplied (TRL)", _pl_multiply_mask),
                     KnownRight("float64", as_float64(pr.policy_loss))],
        atol=1e-5),
    Exercise(
        id="9.4", title="The clipped value loss", reference=pr.value_loss, cases=_value_cases, grad_wrt=_VALUE_ARGS,
        hint="V_clip = old_values + clamp(values − old_values, −ε, ε); per token max((V − R)², (V_clip − R)²); "
             "½ × the mean over masked tokens. Detach old_values and returns.",
        known_wrong=[
            KnownWrong("min instead of max", _vl_min,
                       "Keep the larger of the two errors, max((V − R)², (V_clip − R)²): the pessimistic choice, as in "
                       "the policy loss. With min, the clipped error hides how far V has moved."),
            KnownWrong("no clipping, or clipped around the return", _vl_unclipped,
                       "Your loss is the plain ½ (V − R)²: either nothing is clipped, or the clip is around the "
                       "return, clamp(values, R − ε, R + ε), whose error is never the larger one. The clip keeps the "
                       "new value near the *old* one, so the critic cannot move far in one rollout: "
                       "V_clip = old_values + clamp(values − old_values, −ε, ε), then the larger of the two errors."),
            KnownWrong("F.mse_loss", _vl_mse,
                       "`F.mse_loss` is the mean of (V − R)²: it has neither the clip nor the ½. Write the loss out: "
                       "½ × masked mean of max((V − R)², (V_clip − R)²), with old_values and returns detached."),
            KnownWrong("clipped error only", _vl_clipped_only,
                       "Take the max of *both* errors, the unclipped (V − R)² and the clipped (V_clip − R)²: the "
                       "clipped one alone gives no gradient once V is ε away from V_old."),
            KnownWrong("no ½", _vl_no_half,
                       "The loss is ½ × the mean of the squared errors (TRL's `0.5 * masked_mean(...)`)."),
            KnownWrong("masked sum", _vl_sum,
                       "Take the mean over the masked tokens, not the sum."),
            KnownWrong("no mask", _vl_no_mask,
                       "Average over the response tokens only (`masked_mean(x, mask)`): the padding has no return."),
            KnownWrong("targets not detached", _vl_not_detached,
                       "The value is right, but a gradient reaches `old_values` or `returns`. They are the rollout's "
                       "fixed targets: detach them, so that only the new values move."),
            KnownWrong("no gradient", under_no_grad(pr.value_loss),
                       "The value is right but the loss carries no gradient: it was computed under `torch.no_grad()` "
                       "or detached on the way, so the critic would not learn."),
        ],
        known_right=[KnownRight("mask multiplied", _vl_multiply_mask),
                     KnownRight("clamp between old ± ε", _vl_clamp_bounds),
                     KnownRight("float64", as_float64(pr.value_loss))],
        atol=1e-5),
    Exercise(
        id="9.5", title="Explained variance of the critic", reference=pr.explained_variance, cases=_ev_cases,
        hint="Over the masked entries only: 1 − Var(R − V) / Var(R), both population variances, as a float.",
        known_wrong=[
            KnownWrong("no mask", _ev_no_mask,
                       "Use only the response tokens (`values[mask]`, `returns[mask]`): the padding's values are "
                       "whatever the critic outputs there, and no return belongs to them."),
            KnownWrong("divided by Var(V)", _ev_over_values,
                       "Divide by the variance of the *returns*, 1 − Var(R − V)/Var(R): how much of the returns' "
                       "variance the critic explains."),
            KnownWrong("1 − missing", _ev_no_one_minus,
                       "Var(R − V)/Var(R) is the share *left unexplained*: explained variance is 1 minus it."),
            KnownWrong("R² (mean squared error)", _ev_r2,
                       "You computed R² = 1 − mean((R − V)²)/Var(R). Explained variance (CleanRL, TRL) uses the "
                       "*variance* of the error, Var(R − V), which forgives a constant offset of the critic."),
            KnownWrong("ratio of variances", _ev_var_ratio,
                       "Var(V)/Var(R) says how spread the predictions are, not whether they are right. Use the "
                       "error: 1 − Var(R − V)/Var(R)."),
            KnownWrong("a 0-d tensor", _ev_tensor,
                       "The number is right, but it is a 0-d tensor: the docstring asks for a number, and a tensor "
                       "keeps its dtype and device in the training log. Return `float(...)` of it (or `.item()`)."),
        ],
        known_right=[KnownRight("sample variances (n − 1 cancels)", _ev_unbiased),
                     KnownRight("NumPy", _ev_numpy)],
        atol=1e-5),
)
