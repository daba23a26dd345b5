"""Chapter 10 exercises: group-relative advantages, the clipped token-level surrogate, aggregation of per-token
losses (GRPO, DAPO, Dr. GRPO), the k3 estimator of the KL to the reference, and the expected gradient of a KL
estimate used as a loss."""

from __future__ import annotations

import numpy as np
import torch

from llmcourse import grpo, kl
from llmcourse.grpo import group_advantages
from llmcourse.tooling.checker import (Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad,
                                       updates_in_place)


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


# --------------------------------------------------------------------------- 10.1 group advantages

_REWARD_VALUES = np.array([0.0, 0.1, 1.0, 1.1], dtype=np.float32)   # the rule rewards: wrong/bare, wrong/reasoned, …


def _adv_cases(rng: np.random.Generator) -> list[dict]:
    cases = [
        dict(rewards=_t([1.0, 0.0, 0.0, 0.0]), n_samples=4, scale=True, eps=0.0),          # mean 0.25, std 0.5
        dict(rewards=_t([1.1, 0.0, 1.0, 0.1, 1.1, 1.1, 1.0, 1.001]), n_samples=2, scale=False,
             eps=1e-4),                                   # the third group all equal, the fourth nearly (not 0)
        dict(rewards=_t([0.0, 0.0, 0.0, 1.1, 1.1, 1.1, 1.1, 1.1, 1.0, 0.0, 0.1, 0.0, 1.0, 1.0, 1.0, 1.001]),
             n_samples=4, scale=True, eps=0.0),          # an all-equal group, no eps; the last nearly equal
    ]
    for scale, n in ((True, 4), (False, 8), (True, 8)):
        groups = int(rng.integers(3, 6))
        r = rng.choice(_REWARD_VALUES, size=(groups, n))
        r[0] = r[0, 0]                                                # one group whose rewards are all equal
        cases.append(dict(rewards=_t(r.reshape(-1)), n_samples=n, scale=scale, eps=1e-4))
    return cases


def _groups_of(rewards, n_samples):
    return rewards.view(-1, n_samples)


def _zero_equal(groups, adv):
    equal = (groups == groups[:, :1]).all(dim=1, keepdim=True)
    return torch.where(equal, torch.zeros_like(adv), adv).reshape(-1)


def _adv_population_std(rewards, n_samples, scale=True, eps=1e-4):
    g = _groups_of(rewards, n_samples)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, unbiased=False, keepdim=True) + eps)
    return _zero_equal(g, adv)


def _adv_batch_mean(rewards, n_samples, scale=True, eps=1e-4):
    g = _groups_of(rewards, n_samples)
    adv = g - rewards.mean()                                          # one baseline for the whole batch
    if scale:
        adv = adv / (rewards.std() + eps)
    return _zero_equal(g, adv)


def _adv_batch_std(rewards, n_samples, scale=True, eps=1e-4):
    g = _groups_of(rewards, n_samples)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (rewards.std() + eps)                             # the group's mean, but the batch's std
    return _zero_equal(g, adv)


def _adv_interleaved(rewards, n_samples, scale=True, eps=1e-4):
    g = rewards.view(n_samples, -1).T                                 # rows i, i + P, i + 2P, … taken as a group
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, keepdim=True) + eps)
    equal = (g == g[:, :1]).all(dim=1, keepdim=True)
    return torch.where(equal, torch.zeros_like(adv), adv).T.reshape(-1)


def _adv_always_scaled(rewards, n_samples, scale=True, eps=1e-4):
    return group_advantages(rewards, n_samples, True, eps)


def _adv_never_scaled(rewards, n_samples, scale=True, eps=1e-4):
    return group_advantages(rewards, n_samples, False, eps)


def _adv_no_eps(rewards, n_samples, scale=True, eps=1e-4):
    return group_advantages(rewards, n_samples, scale, 0.0)


def _adv_equal_not_zeroed(rewards, n_samples, scale=True, eps=1e-4):
    g = _groups_of(rewards, n_samples)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, keepdim=True) + eps)               # 0/0 = NaN for an all-equal group when eps = 0
    return adv.reshape(-1)


def _adv_wrong_sign(rewards, n_samples, scale=True, eps=1e-4):
    return -group_advantages(rewards, n_samples, scale, eps)


def _adv_trl(rewards, n_samples, scale=True, eps=1e-4):
    mean = rewards.view(-1, n_samples).mean(dim=1).repeat_interleave(n_samples)     # TRL's grouping
    std = rewards.view(-1, n_samples).std(dim=1).repeat_interleave(n_samples)
    adv = rewards - mean
    if scale:
        adv = adv / (std + eps)
    return torch.where(std == 0, torch.zeros_like(adv), adv)        # equal rewards have std exactly 0


# --------------------------------------------------------------------------- 10.2 the clipped surrogate


def _sur_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(logp=torch.log(_t([[1.5, 0.5, 1.1], [1.5, 0.5, 0.9]])), old_logp=torch.zeros(2, 3),
                advantages=_t([2.0, -1.0]), eps_low=0.2, eps_high=0.2)
    higher = dict(logp=torch.log(_t([[1.25, 0.75, 1.35], [1.25, 0.75, 0.7]])), old_logp=torch.zeros(2, 3),
                  advantages=_t([1.0, -1.0]), eps_low=0.2, eps_high=0.28)       # DAPO's clip-higher
    cases = [hand, higher]
    for eps_low, eps_high in ((0.2, 0.2), (0.1, 0.3), (0.2, 0.28)):
        B, T = int(rng.integers(3, 7)), int(rng.integers(4, 9))
        old = rng.uniform(-4, -0.05, (B, T))
        cases.append(dict(logp=_t(old + rng.normal(0, 0.3, (B, T))), old_logp=_t(old),
                          advantages=_t(rng.normal(0, 1, B)), eps_low=eps_low, eps_high=eps_high))
    return cases


def _ratio(logp, old_logp):
    return torch.exp(logp - old_logp.detach())


def _sur_max(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return -torch.max(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_sides_swapped(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_high, 1 + eps_low) * a)


def _sur_one_eps(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_low) * a)


def _sur_upside_down(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = torch.exp(old_logp.detach() - logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_log_ratio(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = logp - old_logp.detach(), advantages.unsqueeze(-1)        # the log of the ratio, used as the ratio
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_no_minus(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_no_clip(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    return -_ratio(logp, old_logp) * advantages.unsqueeze(-1)


def _sur_clamp_product(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r * a, 1 - eps_low, 1 + eps_high))


def _sur_advantage_outside(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = _ratio(logp, old_logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high)) * a    # min of ρA and clip(ρ), then × A


def _sur_old_not_detached(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    r, a = torch.exp(logp - old_logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_ratio_in_place(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    logp -= old_logp.detach()                                         # the log-ratio written over the caller's log-probs
    r, a = torch.exp(logp), advantages.unsqueeze(-1)
    return -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)


def _sur_cleanrl(logp, old_logp, advantages, eps_low=0.2, eps_high=0.2):
    ratio = (logp - old_logp.detach()).exp()
    a = advantages[:, None]
    return torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))   # CleanRL's pessimistic max


# --------------------------------------------------------------------------- 10.3 aggregation


def _agg_cases(rng: np.random.Generator) -> list[dict]:
    x = _t([[4.0, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 9.0]])           # the 9s are not response tokens
    m = _t([[True, False, False, False], [True, True, True, False]], torch.bool)
    cases = [dict(per_token=x, mask=m, mode=mode, max_len=5) for mode in grpo.AGGREGATIONS]
    for mode in grpo.AGGREGATIONS:
        B, T = int(rng.integers(3, 7)), int(rng.integers(5, 10))
        start, length = rng.integers(0, 3, B), rng.integers(1, 4, B)
        mask = np.zeros((B, T), dtype=bool)
        for i in range(B):
            mask[i, start[i]:start[i] + length[i] + int(rng.integers(0, T - 5 + 1))] = True
        cases.append(dict(per_token=_t(rng.normal(0, 1, (B, T))), mask=_t(mask, torch.bool), mode=mode,
                          max_len=int(T + rng.integers(0, 4))))
    return cases


def _kept(per_token, mask):
    return torch.where(mask, per_token, torch.zeros_like(per_token))


def _agg_no_mask(per_token, mask, mode="sequence", max_len=None):
    ones = torch.ones_like(mask)
    return grpo.aggregate(per_token, ones, mode, max_len)


def _agg_divide_by_columns(per_token, mask, mode="sequence", max_len=None):
    x = _kept(per_token, mask)
    if mode == "sequence":
        return x.mean(dim=1).mean()                                   # zeros on the padding averaged in
    if mode == "token":
        return x.mean()
    return x.sum() / (per_token.size(0) * max_len)


def _agg_always_sequence(per_token, mask, mode="sequence", max_len=None):
    return grpo.aggregate(per_token, mask, "sequence")


def _agg_always_token(per_token, mask, mode="sequence", max_len=None):
    return grpo.aggregate(per_token, mask, "token")


def _agg_sequence_sum(per_token, mask, mode="sequence", max_len=None):
    if mode == "sequence":
        return _kept(per_token, mask).sum(dim=1).mean()               # each response's sum, not its mean
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_dr_no_batch(per_token, mask, mode="sequence", max_len=None):
    if mode == "dr_grpo":
        return _kept(per_token, mask).sum() / max_len                 # forgot B
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_dr_by_tokens(per_token, mask, mode="sequence", max_len=None):
    if mode == "dr_grpo":
        return _kept(per_token, mask).sum(dim=1).mean() / mask.sum(dim=1).max()   # the longest response, not the budget
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_dr_b_and_t(per_token, mask, mode="sequence", max_len=None):
    if mode == "dr_grpo":
        return _kept(per_token, mask).sum() / (per_token.size(1) * max_len)   # T (columns) where B (rows) belongs
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_sequence_mean_of_batch(per_token, mask, mode="sequence", max_len=None):
    if mode == "sequence":
        return (_kept(per_token, mask).sum(dim=1) / mask.sum(dim=1)).sum() / mask.sum()   # divides by tokens again
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_mask_in_place(per_token, mask, mode="sequence", max_len=None):
    per_token.mul_(mask)                                              # zeros written over the caller's losses
    return grpo.aggregate(per_token, mask, mode, max_len)


def _agg_trl(per_token, mask, mode="sequence", max_len=None):
    m = mask.float()                                                  # TRL's three loss types
    if mode == "sequence":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if mode == "token":
        return (per_token * m).sum() / m.sum().clamp(min=1.0)
    return (per_token * m).sum() / (per_token.size(0) * max_len)


def _agg_boolean_index(per_token, mask, mode="sequence", max_len=None):
    if mode == "token":
        return per_token[mask].mean()
    if mode == "dr_grpo":
        return per_token[mask].sum() / (len(per_token) * max_len)
    return torch.stack([row[keep].mean() for row, keep in zip(per_token, mask)]).mean()


# --------------------------------------------------------------------------- 10.4 the k3 KL estimator


def _kl_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(logp=torch.log(_t([0.5, 0.2])), ref_logp=torch.log(_t([0.25, 0.6]))),
             dict(logp=torch.log(_t([[0.9, 0.1, 0.3]])), ref_logp=torch.log(_t([[0.3, 0.5, 0.3]]))),
             # log r = −12, +12, −0.5: a token the reference nearly never writes, and one the policy has dropped
             dict(logp=_t([[-0.01, -13.0, -2.0]]), ref_logp=_t([[-12.01, -1.0, -2.5]]))]
    for _ in range(3):
        B, T = int(rng.integers(2, 6)), int(rng.integers(3, 8))
        logp = rng.uniform(-5, -0.01, (B, T))
        cases.append(dict(logp=_t(logp), ref_logp=_t(np.minimum(logp + rng.normal(0, 1.0, (B, T)), -1e-3))))
    return cases


def _k3_upside_down(logp, ref_logp):
    log_ratio = logp - ref_logp                                       # log π/π_ref instead of log π_ref/π
    return torch.exp(log_ratio) - 1 - log_ratio


def _k3_is_k1(logp, ref_logp):
    return logp - ref_logp


def _k3_is_k2(logp, ref_logp):
    return 0.5 * (ref_logp - logp) ** 2


def _k3_no_minus_one(logp, ref_logp):
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio


def _k3_abs_k1(logp, ref_logp):
    return (logp - ref_logp).abs()


def _k3_plus_log(logp, ref_logp):
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - 1 + log_ratio


def _k3_in_place(logp, ref_logp):
    log_ratio = ref_logp.sub_(logp)                                   # written over the caller's reference log-probs
    return torch.exp(log_ratio) - 1 - log_ratio


def _k3_log_ratio_clamped(logp, ref_logp):
    log_ratio = torch.clamp(ref_logp - logp, -10, 10)                 # "for numerical safety"
    return torch.exp(log_ratio) - 1 - log_ratio


def _k3_value_clamped(logp, ref_logp):
    log_ratio = ref_logp - logp
    return torch.clamp(torch.exp(log_ratio) - 1 - log_ratio, -10, 10)  # verl's low_var_kl clamps its result


def _k3_trl(logp, ref_logp):
    return torch.exp(ref_logp - logp) - (ref_logp - logp) - 1


def _k3_expm1(logp, ref_logp):
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio                         # more accurate where r ≈ 1


# --------------------------------------------------------------------------- 10.5 the expected gradient of a KL term


def _grad_cases(rng: np.random.Generator) -> list[dict]:
    half = dict(logits=torch.zeros(2), ref_logits=torch.log(_t([0.75, 0.25])))     # the hand-worked pair
    cases = [dict(half, loss_fn=kl.k2), dict(half, loss_fn=kl.k1),
             dict(logits=_t([2.0, 1.0, 0.5, 0.0, -0.5, -1.0]), ref_logits=_t([-1.5, -0.5, 0.2, 0.5, 1.2, 1.5]),
                  loss_fn=kl.k3)]
    for name in ("k3 in the loss", "k2 in the loss", "k1 in the reward", "k3 × ratio in the loss"):
        V = int(rng.integers(3, 9))
        logits = rng.normal(0, 1.5, V) + 3.0                                       # not normalised
        cases.append(dict(logits=_t(logits), ref_logits=_t(logits + rng.normal(0, 1.5, V)),
                          loss_fn=kl.PLACEMENTS[name]))
    return cases


def _eg_parts(logits, ref_logits):
    x = logits.detach().clone().requires_grad_(True)
    return x, torch.log_softmax(x, -1), torch.log_softmax(ref_logits, -1)


def _eg_draw_differentiated(logits, ref_logits, loss_fn):
    x, logp, ref = _eg_parts(logits, ref_logits)
    return torch.autograd.grad((logp.exp() * loss_fn(logp, ref)).sum(), x)[0]     # ∇ of the expected value


def _eg_uniform(logits, ref_logits, loss_fn):
    x, logp, ref = _eg_parts(logits, ref_logits)
    return torch.autograd.grad(loss_fn(logp, ref).mean(), x)[0]                     # every token equally likely


def _eg_reference_weights(logits, ref_logits, loss_fn):
    x, logp, ref = _eg_parts(logits, ref_logits)
    return torch.autograd.grad((ref.exp() * loss_fn(logp, ref)).sum(), x)[0]        # tokens drawn from π_ref


def _eg_no_weights(logits, ref_logits, loss_fn):
    x, logp, ref = _eg_parts(logits, ref_logits)
    return torch.autograd.grad(loss_fn(logp, ref).sum(), x)[0]


def _eg_wrt_logp(logits, ref_logits, loss_fn):
    logp = torch.log_softmax(logits, -1).detach().requires_grad_(True)             # the log-probs as the leaf
    ref = torch.log_softmax(ref_logits, -1)
    return torch.autograd.grad((logp.exp().detach() * loss_fn(logp, ref)).sum(), logp)[0]


def _eg_no_log_softmax(logits, ref_logits, loss_fn):
    x = logits.detach().clone().requires_grad_(True)
    ref = torch.log_softmax(ref_logits, -1)
    return torch.autograd.grad((x.softmax(-1).detach() * loss_fn(x, ref)).sum(), x)[0]   # logits used as log-probs


def _eg_exact_kl(logits, ref_logits, loss_fn):
    x = logits.detach().clone().requires_grad_(True)
    return torch.autograd.grad(kl.categorical_kl(x, ref_logits), x)[0]             # whatever the loss


def _eg_token_by_token(logits, ref_logits, loss_fn):
    ref = torch.log_softmax(ref_logits.double(), -1)
    total = torch.zeros(len(logits), dtype=torch.float64)
    for y in range(len(logits)):                                                   # one sampled token at a time
        x = logits.detach().double().requires_grad_(True)
        logp = torch.log_softmax(x, -1)
        total += logp[y].exp().item() * torch.autograd.grad(loss_fn(logp, ref)[y], x)[0]
    return total


# --------------------------------------------------------------------------- registry

_NO_GRAD_HINT = ("The value is right but the result carries no gradient: it was computed under `torch.no_grad()`, "
                 "or detached (`.detach()`, `.item()`, NumPy) on the way, so training with it would change nothing.")

register(
    Exercise(
        id="10.1", title="Group-relative advantages", reference=group_advantages, cases=_adv_cases,
        hint="View the rewards as (n_prompts, n_samples) (rows are prompt-major), subtract each group's mean; with "
             "scale=True divide by the group's sample std (torch.std, n − 1) plus eps; set the advantages of a group "
             "whose rewards are all equal to exactly 0; return them flat, shape (B,).",
        known_wrong=[
            KnownWrong("population std", _adv_population_std,
                       "You divided by the population std (n in the denominator, `unbiased=False`, NumPy's default). "
                       "GRPO, like TRL, uses the sample std, `torch.std` with n − 1: for a group of 4 the two differ "
                       "by √(4/3), so your advantages are 15% too large."),
            KnownWrong("mean of the batch", _adv_batch_mean,
                       "You compared each reward with the mean (and std) of the whole batch. GRPO's baseline is the "
                       "mean of the *same prompt's* group: an easy prompt, answered right by all its samples, must "
                       "not look better than a hard one. Take the mean over each row of rewards.view(-1, n_samples)."),
            KnownWrong("std of the batch", _adv_batch_std,
                       "The mean is the group's, but you divided by the std of the whole batch. GRPO divides by each "
                       "group's own std (the batch's std is another choice, REINFORCE++'s; it is not this function)."),
            KnownWrong("groups interleaved", _adv_interleaved,
                       "Your groups are rows i, i + P, i + 2P, …: rewards.view(n_samples, -1) groups the wrong rows. "
                       "The rows are prompt-major, prompt 0's n_samples answers first: rewards.view(-1, n_samples)."),
            KnownWrong("always divides by the std", _adv_always_scaled,
                       "With scale=False (Dr. GRPO) the advantages are only centred: reward minus the group's mean, "
                       "not divided by the std."),
            KnownWrong("never divides by the std", _adv_never_scaled,
                       "With scale=True (GRPO) divide the centred rewards by the group's std plus eps."),
            KnownWrong("eps left out", _adv_no_eps,
                       "Divide by std + eps, not by std alone: eps keeps a group whose rewards nearly agree from "
                       "getting huge advantages (and it is part of the formula the tests compare with)."),
            KnownWrong("all-equal groups not set to 0", _adv_equal_not_zeroed,
                       "A group whose rewards are all equal must get advantages of exactly 0. Yours gives NaN there "
                       "when eps = 0 (0/0), or rounding noise divided by eps: compare each group with its first "
                       "reward, `(groups == groups[:, :1]).all(dim=1)`, and put 0 with `torch.where`."),
            KnownWrong("wrong sign", _adv_wrong_sign,
                       "Your advantages are mean − reward: a right answer would be pushed down. The advantage is "
                       "reward − mean: positive for responses better than their group."),
            KnownWrong("centred in place", updates_in_place(group_advantages, "rewards"),
                       "The value is right but you wrote it into the caller's `rewards` (`rewards -= …`): the loop "
                       "logs the rewards after computing the advantages, and would log advantages instead. Compute "
                       "into a new tensor."),
        ],
        known_right=[KnownRight("TRL's repeat_interleave form", _adv_trl),
                     KnownRight("float64", as_float64(group_advantages))],
        atol=1e-5),
    Exercise(
        id="10.2", title="The token-level clipped surrogate", reference=grpo.clipped_surrogate, cases=_sur_cases,
        grad_wrt=("logp", "old_logp"),
        grad_help="The policy learns through its log-probs, `logp`; π_old, the policy that *sampled* the responses, "
                  "is a constant for the update, so no gradient may reach `old_logp`.",
        hint="ratio = exp(logp − old_logp.detach()); a = advantages.unsqueeze(-1) (one per row, for all its tokens); "
             "loss = −min(ratio · a, clamp(ratio, 1 − eps_low, 1 + eps_high) · a), shape (B, T).",
        known_wrong=[
            KnownWrong("max instead of min", _sur_max,
                       "You took −max(ρA, clip(ρ)A). The surrogate is the *pessimistic* one, min(ρA, clip(ρ)A) (the "
                       "loss is its negative): the clip may take away a gain, never add one. With max, a ratio far "
                       "past the clip keeps being rewarded."),
            KnownWrong("clip sides swapped", _sur_sides_swapped,
                       "The clip is [1 − eps_low, 1 + eps_high]: eps_high is the upper side (DAPO's clip-higher lets "
                       "good tokens grow more), eps_low the lower. Yours has them the other way round."),
            KnownWrong("eps_high ignored", _sur_one_eps,
                       "You clipped to [1 − eps_low, 1 + eps_low]. The upper side is 1 + eps_high (DAPO's "
                       "clip-higher sets it larger than eps_low)."),
            KnownWrong("ratio upside down", _sur_upside_down,
                       "Your ratio is π_old/π_θ. The importance ratio is π_θ/π_old = exp(logp − old_logp): it grows "
                       "when the policy makes the token likelier."),
            KnownWrong("log-ratio used as the ratio", _sur_log_ratio,
                       "You used logp − old_logp as the ratio. The ratio is its exponential, exp(logp − old_logp) "
                       "(1 when the policy has not moved, not 0)."),
            KnownWrong("no minus sign", _sur_no_minus,
                       "min(ρA, clip(ρ)A) is the objective, to *maximise*; the function returns the loss, its "
                       "negative. Yours would push down the responses with a positive advantage."),
            KnownWrong("no clipping", _sur_no_clip,
                       "You returned −ρA without the clipped term, so nothing stops a step from moving a token's "
                       "probability far from π_old. Take −min(ρA, clamp(ρ, 1 − eps_low, 1 + eps_high) A)."),
            KnownWrong("clamped the product", _sur_clamp_product,
                       "You clamped ρ·A to [1 − eps_low, 1 + eps_high]. The clip applies to the ratio alone, and "
                       "the advantage multiplies the clipped ratio: clamp(ρ, 1 − eps_low, 1 + eps_high) · A."),
            KnownWrong("advantage outside the min", _sur_advantage_outside,
                       "You took the min of ρA and clip(ρ) (without A) and multiplied by A after. Both terms carry the "
                       "advantage, min(ρ·A, clip(ρ)·A): which one is smaller depends on the sign of A, and that is "
                       "what makes the clip one-sided."),
            KnownWrong("old log-probs not detached", _sur_old_not_detached,
                       "The value is right, but a gradient reaches `old_logp`. π_old is the policy that sampled the "
                       "responses, a constant for the update: use old_logp.detach()."),
            KnownWrong("no gradient", under_no_grad(grpo.clipped_surrogate), _NO_GRAD_HINT),
            KnownWrong("log-ratio in place", _sur_ratio_in_place,
                       "The value is right, but you subtracted old_logp from the caller's `logp` in place (`-=`): the "
                       "loop still uses logp for the KL term and the clip fraction. Compute the log-ratio into a new "
                       "tensor."),
        ],
        known_right=[KnownRight("CleanRL's max of negatives", _sur_cleanrl),
                     KnownRight("float64", as_float64(grpo.clipped_surrogate))],
        atol=1e-5),
    Exercise(
        id="10.3", title="Per-sequence or per-token: aggregating the loss", reference=grpo.aggregate,
        cases=_agg_cases, grad_wrt=("per_token",),
        hint="Keep only the tokens where mask is True (torch.where, or multiply by mask.float()). 'sequence': each "
             "row's sum / its token count, then the mean over rows; 'token': the sum over the batch / the number of "
             "kept tokens; 'dr_grpo': the sum over the batch / (B · max_len).",
        known_wrong=[
            KnownWrong("no mask", _agg_no_mask,
                       "You averaged over every column, prompt and padding included. Only the response's tokens "
                       "count: keep the entries where `mask` is True (a missing mask is also a missing gradient "
                       "mask: the prompt tokens would be trained too)."),
            KnownWrong("divides by all the columns", _agg_divide_by_columns,
                       "You zeroed the padding but then took `.mean()`, which divides by all T columns, padding "
                       "included. Divide by the number of kept tokens (per row for 'sequence', in the whole batch "
                       "for 'token')."),
            KnownWrong("always per sequence", _agg_always_sequence,
                       "mode='token' (DAPO) is not the mean of the responses' means: sum the kept tokens of the whole "
                       "batch and divide by their number, so that every token weighs the same and a long response "
                       "weighs more than a short one."),
            KnownWrong("always per token", _agg_always_token,
                       "mode='sequence' (GRPO as published) first averages each response over its own tokens, then "
                       "takes the mean over responses: every response weighs the same, however long."),
            KnownWrong("sum per sequence", _agg_sequence_sum,
                       "For 'sequence' you summed each response's tokens. GRPO takes each response's *mean* "
                       "(1/|o_i| Σ_t), then the mean over responses (sum versus mean)."),
            KnownWrong("Dr. GRPO without B", _agg_dr_no_batch,
                       "Dr. GRPO divides the sum over all kept tokens by B · max_len (the number of responses times "
                       "the token budget), a constant; yours divides by max_len alone."),
            KnownWrong("Dr. GRPO by the longest response", _agg_dr_by_tokens,
                       "Dr. GRPO's divisor is a constant, B · max_len, with max_len the token *budget* passed in, not "
                       "the longest response of this batch (that would bring back a dependence on the lengths)."),
            KnownWrong("Dr. GRPO by T · max_len", _agg_dr_b_and_t,
                       "Dr. GRPO divides by B · max_len, B the number of responses (rows, per_token.size(0)); yours "
                       "uses the number of columns, per_token.size(1)."),
            KnownWrong("divides by the tokens twice", _agg_sequence_mean_of_batch,
                       "For 'sequence' you divided the sum of the per-response means by the batch's token count. "
                       "Take the mean over responses: divide by B."),
            KnownWrong("mask applied in place", _agg_mask_in_place,
                       "The value is right, but you multiplied the caller's `per_token` by the mask in place "
                       "(`*=`, `.mul_()`): the caller's losses changed. Use torch.where or `per_token * mask`."),
            KnownWrong("no gradient", under_no_grad(grpo.aggregate), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("TRL's loss types", _agg_trl), KnownRight("boolean indexing", _agg_boolean_index),
                     KnownRight("float64", as_float64(grpo.aggregate))],
        atol=1e-5),
    Exercise(
        id="10.4", title="The k3 estimator of the KL to the reference", reference=kl.k3, cases=_kl_cases,
        grad_wrt=("logp",),
        grad_help="With β > 0 the KL term is part of the loss: the policy's log-probs must keep their gradient.",
        hint="log r = ref_logp − logp (r = π_ref/π of the sampled token); k3 = (exp(log r) − 1) − log r, per token, "
             "with no clamp: the tokens with a large |log r| are the ones the penalty is for.",
        known_wrong=[
            KnownWrong("ratio upside down", _k3_upside_down,
                       "Your r is π/π_ref. For tokens sampled from π, k3 uses r = π_ref/π = exp(ref_logp − logp): "
                       "then E_π[r] = 1 and k3 is an unbiased estimate of KL(π ‖ π_ref). The other way round it "
                       "is still ≥ 0 but estimates something else."),
            KnownWrong("k1", _k3_is_k1,
                       "That is k1 = log π − log π_ref: its value is unbiased too, but negative for some tokens, and "
                       "as a loss term it does nothing on average (its gradient is ∇log π, which averages to 0 over "
                       "sampled tokens; section 5). This exercise is k3 = (r − 1) − log r, never negative."),
            KnownWrong("k2", _k3_is_k2,
                       "That is k2 = ½ (log r)², Schulman's biased estimator (section 5 shows what its gradient does "
                       "in a loss). This exercise is k3 = (r − 1) − log r, what GRPO uses."),
            KnownWrong("− 1 left out", _k3_no_minus_one,
                       "You returned r − log r, which is 1 where π = π_ref: subtract 1, k3 = (r − 1) − log r, so "
                       "that the KL is 0 when the policy equals the reference."),
            KnownWrong("|k1|", _k3_abs_k1,
                       "|log π − log π_ref| is never negative, but it is not an unbiased estimate of the KL (it "
                       "overestimates it). k3 = (r − 1) − log r with r = π_ref/π is both."),
            KnownWrong("+ log r", _k3_plus_log,
                       "The sign of the log: k3 = (r − 1) − log r. With + log r it can be negative (for r < 1)."),
            KnownWrong("log-ratio clamped", _k3_log_ratio_clamped,
                       "You clamped the log-ratio (to ±10 or so). Where the policy has dropped a token the reference "
                       "likes, log r = log π_ref − log π is large, and k3 must be too: that is where the penalty "
                       "pulls. A clamp hides exactly those tokens and cuts their gradient. The log-probs are finite, "
                       "so exp(log r) is too (up to log r ≈ 88 in float32): no clamp is needed."),
            KnownWrong("value clamped", _k3_value_clamped,
                       "You clamped k3 itself (to ±10; verl's `low_var_kl` does, for stability). This exercise is k3 "
                       "as it is: a clamp turns the penalty off, gradient included, on the tokens where the policy "
                       "has moved furthest from the reference."),
            KnownWrong("no gradient", under_no_grad(kl.k3), _NO_GRAD_HINT),
            KnownWrong("log-ratio in place", _k3_in_place,
                       "The value is right, but `ref_logp.sub_(logp)` wrote the log-ratio over the caller's "
                       "reference log-probs. Compute `ref_logp - logp` into a new tensor."),
        ],
        known_right=[KnownRight("TRL's formula", _k3_trl), KnownRight("expm1", _k3_expm1),
                     KnownRight("float64", as_float64(kl.k3))],
        atol=1e-5),
    Exercise(
        id="10.5", title="What a KL term does as a loss: its expected gradient", reference=kl.expected_gradient,
        cases=_grad_cases,
        hint="x = logits.detach().clone().requires_grad_(True); logp = log_softmax(x), ref_logp = "
             "log_softmax(ref_logits); weights = logp.exp().detach(); return the gradient of "
             "(weights * loss_fn(logp, ref_logp)).sum() with respect to x (torch.autograd.grad).",
        known_wrong=[
            KnownWrong("the draw differentiated", _eg_draw_differentiated,
                       "Your weights π(y) carry a gradient, so you computed ∇ E_π[ℓ], the gradient of the expected "
                       "value. A training step differentiates ℓ at a token that was already sampled: the draw is "
                       "fixed. Weigh by logp.exp().detach(). (The difference is the score-function term; for k1 and "
                       "k3 it is exactly what turns their gradient into the reverse KL's.)"),
            KnownWrong("every token equally likely", _eg_uniform,
                       "You averaged the tokens' gradients with equal weights. The tokens are drawn from π: weigh "
                       "each by π(y) = logp.exp().detach() and sum."),
            KnownWrong("weighed by the reference", _eg_reference_weights,
                       "You weighed the tokens by π_ref. The responses are sampled from the policy π, not from the "
                       "reference: weigh by π(y) = logp.exp().detach()."),
            KnownWrong("no weights", _eg_no_weights,
                       "You summed every token's gradient without weighing it by its probability. The expectation "
                       "over y ~ π is Σ_y π(y) ∇ℓ(y), with π(y) held constant."),
            KnownWrong("gradient w.r.t. the log-probs", _eg_wrt_logp,
                       "You differentiated with respect to the log-probs, as if each could move on its own. The "
                       "parameters here are the logits: make `logits` (a detached copy) require grad and get the "
                       "log-probs from them with log_softmax, so that raising one token lowers the others."),
            KnownWrong("logits used as log-probs", _eg_no_log_softmax,
                       "The logits are not normalised: the log-probs are log_softmax(logits) (and the same for the "
                       "reference). Your π did not sum to 1 in the loss."),
            KnownWrong("the exact KL's gradient", _eg_exact_kl,
                       "You returned the gradient of the exact KL(π ‖ π_ref), whatever `loss_fn` is. The question is "
                       "what each loss term does: compute the expected gradient of `loss_fn` itself."),
        ],
        known_right=[KnownRight("token by token, in float64", _eg_token_by_token),
                     KnownRight("float64", as_float64(kl.expected_gradient))],
        atol=1e-6),
)
