"""Chapter 03 exercises: rewards-to-go, the REINFORCE loss, GAE, PPO's clipped losses."""

from __future__ import annotations

import numpy as np
import torch

from llmcourse import policy_gradient as pg
from llmcourse import cartpole_ppo
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad, updates_in_place


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


# --------------------------------------------------------------------------- 3.1 rewards-to-go


def _rtg_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(rewards=_t([1.0, 1.0, 1.0]), gamma=0.5), dict(rewards=_t([0.0, 0.0, 1.0]), gamma=0.9),
             dict(rewards=_t([2.0]), gamma=0.9), dict(rewards=_t([1.0, -1.0, 2.0, 0.5], torch.float64), gamma=0.8)]
    for _ in range(3):
        n = int(rng.integers(3, 12))
        cases.append(dict(rewards=_t(rng.integers(-3, 4, n)), gamma=float(np.round(rng.uniform(0.3, 0.95), 2))))
    return cases


def _rtg_whole_return(rewards, gamma):
    g = pg.rewards_to_go(rewards, gamma)
    return torch.full_like(rewards, float(g[0])) if len(g) else g


def _rtg_no_discount(rewards, gamma):
    return rewards.flip(0).cumsum(0).flip(0)


def _rtg_forwards(rewards, gamma):
    out, running = torch.zeros_like(rewards), 0.0
    for t in range(len(rewards)):  # G = r + γ·G, but walking forwards through the episode
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _rtg_excludes_now(rewards, gamma):
    g = pg.rewards_to_go(rewards, gamma)
    return torch.cat([g[1:], torch.zeros(1, dtype=rewards.dtype)])


def _rtg_discount_from_one(rewards, gamma):
    return gamma * pg.rewards_to_go(rewards, gamma)


def _rtg_float32(rewards, gamma):
    out, running = torch.zeros(len(rewards)), 0.0                      # float32, whatever the rewards' dtype
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _rtg_in_place(rewards, gamma):
    for t in reversed(range(len(rewards) - 1)):  # G_t = r_t + γ G_{t+1}, written over the rewards
        rewards[t] += gamma * rewards[t + 1]
    return rewards


_NO_GRAD_HINT = ("The value is right but the loss carries no gradient: it was computed under `torch.no_grad()`, "
                 "or detached (`.detach()`, `.item()`, `float(...)`, NumPy) on the way. {what} Compute it with "
                 "torch operations on the inputs, outside `no_grad`, and return the tensor itself.")

# --------------------------------------------------------------------------- 3.2 REINFORCE loss


def _reinforce_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(log_probs=torch.log(_t([0.5, 0.25])), advantages=_t([2.0, 1.0])),
             dict(log_probs=torch.log(_t([0.9, 0.1, 0.6])), advantages=_t([1.0, 1.0, 1.0]))]
    for _ in range(3):
        n = int(rng.integers(4, 16))
        cases.append(dict(log_probs=torch.log(_t(rng.uniform(0.05, 0.95, n))), advantages=_t(rng.normal(0, 2, n))))
    return cases


def _reinforce_plus(log_probs, advantages):
    return (advantages.detach() * log_probs).mean()


def _reinforce_sum(log_probs, advantages):
    return -(advantages.detach() * log_probs).sum()


def _reinforce_no_detach(log_probs, advantages):
    return -(advantages * log_probs).mean()


def _reinforce_detaches_log_probs(log_probs, advantages):
    return -(advantages * log_probs.detach()).mean()


def _reinforce_probs(log_probs, advantages):
    return -(advantages.detach() * log_probs.exp()).mean()


# --------------------------------------------------------------------------- 3.3 GAE


def _gae_cases(rng: np.random.Generator) -> list[dict]:
    cases = [
        # hand-worked: an episode ends after step 1, a new one runs to the end of the rollout
        dict(rewards=_t([1.0, 1.0, 1.0, 1.0]), values=_t([0.5, 0.2, 1.0, 0.8]), dones=_t([0.0, 1.0, 0.0, 0.0]),
             last_value=_t(2.0), gamma=0.9, lam=0.8),
        # the rollout ends exactly at an episode end: last_value must not be used
        dict(rewards=_t([0.0, 1.0, -1.0]), values=_t([0.3, -0.2, 0.4]), dones=_t([0.0, 0.0, 1.0]),
             last_value=_t(5.0), gamma=0.9, lam=0.9),
    ]
    for lam in (0.0, 1.0, float(np.round(rng.uniform(0.5, 0.95), 2))):  # TD error, Monte-Carlo, in between
        T = int(rng.integers(5, 9))
        dones = np.zeros(T)
        dones[rng.integers(1, T - 2)] = 1.0  # an episode end in the middle of the rollout
        cases.append(dict(rewards=_t(rng.integers(-1, 3, T)), values=_t(np.round(rng.normal(0, 1, T), 2)),
                          dones=_t(dones), last_value=_t(round(float(rng.normal(1, 1)), 2)),
                          gamma=float(np.round(rng.uniform(0.8, 0.99), 2)), lam=lam))
    T, N = int(rng.integers(6, 10)), 3  # a batch of parallel environments: (T, N)
    dones = (rng.random((T, N)) < 0.25).astype(float)
    dones[T // 2, 0] = 1.0
    cases.append(dict(rewards=_t(rng.normal(0, 1, (T, N))), values=_t(rng.normal(0, 1, (T, N))), dones=_t(dones),
                      last_value=_t(rng.normal(0, 1, N)), gamma=0.95, lam=0.9))
    return cases


def _gae_with(rewards, values, dones, last_value, gamma, lam, mask_delta=True, mask_recursion=True,
              lam_in_delta=False, gamma_in_recursion=True, bootstrap_end=True, shift_dones=False):
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[0])
    next_value = last_value if bootstrap_end else torch.zeros_like(last_value)
    for t in reversed(range(len(rewards))):
        if shift_dones:  # CleanRL's convention (done[t+1] = "obs t+1 starts a new episode") applied to ours
            nonterminal = 1.0 - dones[t + 1] if t + 1 < len(rewards) else torch.ones_like(dones[t])
        else:
            nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * (lam if lam_in_delta else 1.0) * next_value * (nonterminal if mask_delta else 1.0) - values[t]
        next_advantage = delta + (gamma if gamma_in_recursion else 1.0) * lam * (nonterminal if mask_recursion else 1.0) * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages


def _gae_ignores_done(**kw):
    return _gae_with(**kw, mask_delta=False, mask_recursion=False)


def _gae_bootstraps_past_terminal(**kw):
    return _gae_with(**kw, mask_delta=False)


def _gae_leaks_across_episodes(**kw):
    return _gae_with(**kw, mask_recursion=False)


def _gae_lam_in_delta(**kw):
    return _gae_with(**kw, lam_in_delta=True)


def _gae_no_gamma_in_recursion(**kw):
    return _gae_with(**kw, gamma_in_recursion=False)


def _gae_no_bootstrap_at_end(**kw):
    return _gae_with(**kw, bootstrap_end=False)


def _gae_shifted_dones(**kw):
    return _gae_with(**kw, shift_dones=True)


def _gae_returns(**kw):
    return pg.gae(**kw) + kw["values"]


# --------------------------------------------------------------------------- 3.4 PPO clipped surrogate


def _ppo_cases(rng: np.random.Generator) -> list[dict]:
    # ratios 1.5, 0.5 (outside [0.8, 1.2]) and 1.1, 0.9 (inside), each with A > 0 and A < 0
    ratios = _t([1.5, 1.5, 0.5, 0.5, 1.1, 0.9])
    old = torch.log(_t([0.2, 0.4, 0.6, 0.5, 0.3, 0.5]))
    cases = [dict(new_log_probs=old + torch.log(ratios), old_log_probs=old,
                  advantages=_t([1.0, -1.0, 1.0, -1.0, 2.0, -0.5]), clip_eps=0.2),
             dict(new_log_probs=old.clone(), old_log_probs=old, advantages=_t([1.0, -2.0, 0.5, 0.0, 3.0, -1.0]),
                  clip_eps=0.2)]  # ratio = 1: the plain policy-gradient loss
    for eps in (0.1, 0.2, 0.3):
        n = int(rng.integers(8, 16))
        old = torch.log(_t(rng.uniform(0.05, 0.95, n)))
        cases.append(dict(new_log_probs=old + _t(rng.normal(0, 0.4, n)), old_log_probs=old,
                          advantages=_t(rng.normal(0, 1.5, n)), clip_eps=eps))
    return cases


def _ratio(new_log_probs, old_log_probs):
    return torch.exp(new_log_probs - old_log_probs)


def _ppo_max(new_log_probs, old_log_probs, advantages, clip_eps):
    r = _ratio(new_log_probs, old_log_probs)
    return -torch.max(r * advantages, torch.clamp(r, 1 - clip_eps, 1 + clip_eps) * advantages).mean()


def _ppo_clips_advantage(new_log_probs, old_log_probs, advantages, clip_eps):
    r = _ratio(new_log_probs, old_log_probs)
    return -torch.min(r * advantages, r * torch.clamp(advantages, 1 - clip_eps, 1 + clip_eps)).mean()


def _ppo_no_sign(new_log_probs, old_log_probs, advantages, clip_eps):
    return -cartpole_ppo.ppo_policy_loss(new_log_probs, old_log_probs, advantages, clip_eps)


def _ppo_clip_only(new_log_probs, old_log_probs, advantages, clip_eps):
    r = _ratio(new_log_probs, old_log_probs)
    return -(torch.clamp(r, 1 - clip_eps, 1 + clip_eps) * advantages).mean()


def _ppo_inverted_ratio(new_log_probs, old_log_probs, advantages, clip_eps):
    return cartpole_ppo.ppo_policy_loss(old_log_probs, new_log_probs, advantages, clip_eps)


# --------------------------------------------------------------------------- 3.5 value loss


def _value_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(new_values=_t([2.0]), old_values=_t([0.0]), returns=_t([1.0]), clip_eps=0.5),
             # moved far past the old value, towards / away from / beyond the return
             dict(new_values=_t([1.0, 3.0, -1.0, 0.1]), old_values=_t([0.0, 2.0, 0.0, 0.0]),
                  returns=_t([2.0, 1.0, 1.0, 0.2]), clip_eps=0.2),
             dict(new_values=_t([1.0, 3.0, -1.0, 0.1]), old_values=_t([0.0, 2.0, 0.0, 0.0]),
                  returns=_t([2.0, 1.0, 1.0, 0.2]), clip_eps=None)]
    for eps in (0.2, None, 0.5):
        n = int(rng.integers(6, 12))
        old = _t(rng.normal(0, 2, n))
        cases.append(dict(new_values=old + _t(rng.normal(0, 1, n)), old_values=old,
                          returns=old + _t(rng.normal(0, 1.5, n)), clip_eps=eps))
    return cases


def _value_min(new_values, old_values, returns, clip_eps=None):
    if clip_eps is None:
        return cartpole_ppo.value_loss(new_values, old_values, returns)
    v_clipped = old_values + torch.clamp(new_values - old_values, -clip_eps, clip_eps)
    return 0.5 * torch.min((new_values - returns) ** 2, (v_clipped - returns) ** 2).mean()


def _value_no_half(new_values, old_values, returns, clip_eps=None):
    return 2 * cartpole_ppo.value_loss(new_values, old_values, returns, clip_eps)


def _value_clip_detached(new_values, old_values, returns, clip_eps=None):
    if clip_eps is None:
        return cartpole_ppo.value_loss(new_values, old_values, returns)
    v_clipped = old_values + torch.clamp(new_values.detach() - old_values, -clip_eps, clip_eps)
    return 0.5 * torch.max((new_values - returns) ** 2, (v_clipped - returns) ** 2).mean()


def _value_clipped_only(new_values, old_values, returns, clip_eps=None):
    if clip_eps is None:
        return cartpole_ppo.value_loss(new_values, old_values, returns)
    v_clipped = old_values + torch.clamp(new_values - old_values, -clip_eps, clip_eps)
    return 0.5 * ((v_clipped - returns) ** 2).mean()


def _value_ignores_clip(new_values, old_values, returns, clip_eps=None):
    return cartpole_ppo.value_loss(new_values, old_values, returns, None)


register(
    Exercise(
        id="3.1", title="Rewards-to-go", reference=pg.rewards_to_go, cases=_rtg_cases,
        exact_dtype=True,  # the docstring: same dtype as the rewards
        hint="G_t = r_t + γ G_{t+1}, starting from G_T = 0 after the last step: fill the output from the end. "
             "Return a tensor like `rewards` (torch.zeros_like).",
        known_wrong=[
            KnownWrong("whole return everywhere", _rtg_whole_return,
                       "You gave every step the whole episode's return R(τ) = G_0. A step's action cannot "
                       "change rewards that came before it: use only the rewards from t on, G_t."),
            KnownWrong("no discount", _rtg_no_discount,
                       "You summed the future rewards without discounting: r_{t+k} is multiplied by γ^k."),
            KnownWrong("forwards recursion", _rtg_forwards,
                       "You walked the episode forwards, so each entry sums the *past* rewards. "
                       "Loop t from T−1 down to 0: G_t = r_t + γ·G_{t+1}."),
            KnownWrong("excludes the current reward", _rtg_excludes_now,
                       "Off by one: G_t starts with r_t, the reward that follows action a_t (index t), "
                       "not r_{t+1}. The last entry equals the last reward."),
            KnownWrong("discount from γ^1", _rtg_discount_from_one,
                       "The first reward of G_t is not discounted: G_t = r_t + γ r_{t+1} + …, so G_{T−1} = r_{T−1}."),
            KnownWrong("float32 whatever the input", _rtg_float32,
                       "The values are right, but torch.zeros(T) is always float32, so float64 rewards come back "
                       "rounded to float32. The docstring asks for the rewards' dtype: torch.zeros_like(rewards)."),
            KnownWrong("overwrites the rewards", _rtg_in_place,
                       "You computed G_t by writing over `rewards` (rewards[t] += γ·rewards[t+1]), so the caller's "
                       "rewards changed too: the episode's logged rewards would now be returns. Fill a new tensor, "
                       "`out = torch.zeros_like(rewards)`, and return it."),
        ]),
    Exercise(
        id="3.2", title="REINFORCE loss", reference=pg.reinforce_loss, cases=_reinforce_cases,
        grad_wrt=("log_probs", "advantages"),
        hint="loss = −mean(advantages.detach() · log_probs): a scalar tensor whose gradient is "
             "−(1/B) Σ A_t ∇log π(a_t|s_t). The check also compares the gradients it produces.",
        known_wrong=[
            KnownWrong("wrong sign", _reinforce_plus,
                       "Sign: optimisers *minimise*, and we want to *increase* J = E[A·log π]. "
                       "The loss is −mean(A · log π); without the minus, training makes good actions rarer."),
            KnownWrong("sum instead of mean", _reinforce_sum,
                       "Average over the batch (mean), don't sum: with a sum the step size grows with the batch size."),
            KnownWrong("advantages not detached", _reinforce_no_detach,
                       "The advantages got a gradient. They are weights, "
                       "not something to optimise: use advantages.detach(), or a critic would be trained to "
                       "change its values so as to raise this loss's log-probabilities."),
            KnownWrong("log-probabilities detached", _reinforce_detaches_log_probs,
                       "You detached the log-probabilities, so no gradient reaches the policy. Detach the "
                       "*advantages* (weights, not something to optimise) and keep log_probs in the graph: "
                       "−mean(advantages.detach() · log_probs)."),
            KnownWrong("probabilities instead of log-probabilities", _reinforce_probs,
                       "You weighted π(a|s) itself (log_probs.exp()). The log-derivative trick needs "
                       "∇ log π = ∇π / π: multiply the advantages by the log-probabilities."),
            KnownWrong("loss without gradient", under_no_grad(pg.reinforce_loss),
                       _NO_GRAD_HINT.format(what="`loss.backward()` would fail or change nothing, and the policy "
                                            "would never learn.")),
        ],
        known_right=[KnownRight("float64 loss", as_float64(pg.reinforce_loss))]),
    Exercise(
        id="3.3", title="Generalised advantage estimation", reference=pg.gae, cases=_gae_cases,
        hint="Walk t backwards. nonterminal = 1 − dones[t]; δ_t = r_t + γ·V_next·nonterminal − V_t; "
             "A_t = δ_t + γλ·nonterminal·A_{t+1}. V_next is last_value at t = T−1, then values[t+1].",
        known_wrong=[
            KnownWrong("ignores done", _gae_ignores_done,
                       "You ignored `dones`: where an episode ended (dones[t] = 1) the next value belongs to a "
                       "new episode. Multiply both the bootstrap γV(s_{t+1}) and the carried A_{t+1} by (1 − dones[t])."),
            KnownWrong("bootstraps past a terminal", _gae_bootstraps_past_terminal,
                       "You reset the advantage at an episode end but still added γ·V(s_{t+1}) in δ_t. "
                       "After a terminal there is no future: δ_t = r_t − V(s_t) where dones[t] = 1."),
            KnownWrong("advantage leaks across episodes", _gae_leaks_across_episodes,
                       "δ_t is right, but A_{t+1} of the *next* episode flows into A_t. Multiply the recursive "
                       "term by (1 − dones[t]) too: A_t = δ_t + γλ(1 − dones[t])A_{t+1}."),
            KnownWrong("λ misplaced (inside δ)", _gae_lam_in_delta,
                       "λ belongs only in the recursion A_t = δ_t + γλA_{t+1}; the TD error δ_t = r_t + γV(s_{t+1}) − V(s_t) "
                       "has no λ."),
            KnownWrong("no γ in the recursion", _gae_no_gamma_in_recursion,
                       "The recursion discounts by γλ, not λ alone: A_t = δ_t + γλ(1 − done_t)A_{t+1}."),
            KnownWrong("no bootstrap at the end", _gae_no_bootstrap_at_end,
                       "At the last step t = T−1, V(s_{t+1}) is `last_value` (the rollout was cut, the episode goes on): "
                       "use it unless dones[T−1] = 1."),
            KnownWrong("dones shifted by one", _gae_shifted_dones,
                       "dones[t] = 1 means the episode ended *with step t* (CleanRL stores it one step later). "
                       "Mask step t with 1 − dones[t], not 1 − dones[t+1]."),
            KnownWrong("returned returns", _gae_returns,
                       "That is the return target A_t + V(s_t). Return the advantages A_t (without adding the values)."),
            KnownWrong("advantages written over the rewards", updates_in_place(pg.gae, "rewards"),
                       "The advantages are right, but you wrote them into `rewards`, so the caller's rewards changed "
                       "too (the returns computed from them next would be wrong). Fill a new tensor, "
                       "`advantages = torch.zeros_like(rewards)`."),
        ]),
    Exercise(
        id="3.4", title="PPO clipped surrogate loss", reference=cartpole_ppo.ppo_policy_loss, cases=_ppo_cases,
        grad_wrt=("new_log_probs",),
        hint="ratio = exp(new − old); loss = −mean(min(ratio·A, clamp(ratio, 1−ε, 1+ε)·A)). "
             "Keep it a tensor so the gradient flows to new_log_probs.",
        known_wrong=[
            KnownWrong("max instead of min", _ppo_max,
                       "PPO takes the *minimum* of the clipped and unclipped objectives (a pessimistic bound). "
                       "With max, a ratio far outside [1−ε, 1+ε] is still rewarded: no brake at all."),
            KnownWrong("clipping the advantage", _ppo_clips_advantage,
                       "Clip the *ratio* to [1−ε, 1+ε], not the advantage: clamp(ratio, 1−ε, 1+ε)·A."),
            KnownWrong("missing sign", _ppo_no_sign,
                       "That is the surrogate objective (to maximise). Return the loss, its negative: "
                       "−mean(min(…)), or the optimiser makes good actions less likely."),
            KnownWrong("clipped term only", _ppo_clip_only,
                       "Without the min against ratio·A the loss forgets the unclipped term: where clipping would make "
                       "the objective *better* (e.g. ratio > 1+ε with A < 0) PPO keeps ratio·A."),
            KnownWrong("ratio upside down", _ppo_inverted_ratio,
                       "The ratio is π_new/π_old = exp(new_log_probs − old_log_probs), not the other way round."),
            KnownWrong("loss without gradient", under_no_grad(cartpole_ppo.ppo_policy_loss),
                       _NO_GRAD_HINT.format(what="PPO's update epochs would not move the policy.")),
        ],
        known_right=[KnownRight("float64 loss", as_float64(cartpole_ppo.ppo_policy_loss))]),
    Exercise(
        id="3.5", title="Value loss (optionally clipped)", reference=cartpole_ppo.value_loss, cases=_value_cases,
        grad_wrt=("new_values",),
        hint="Unclipped: 0.5·mean((V − R)²). Clipped: V_clip = V_old + clamp(V − V_old, −ε, ε), "
             "loss = 0.5·mean(max((V − R)², (V_clip − R)²)).",
        known_wrong=[
            KnownWrong("min instead of max", _value_min,
                       "Keep the *larger* of the two squared errors (max), like PPO's pessimistic policy loss; "
                       "min lets the critic take big steps whenever one of them is small."),
            KnownWrong("no ½", _value_no_half,
                       "The value loss is ½·mean((V − R)²) (so its gradient is V − R); you left out the ½."),
            KnownWrong("clipped value detached", _value_clip_detached,
                       "V_clip = V_old + clamp(V − V_old, −ε, ε) must keep its gradient: where the clipped error is "
                       "the larger one, the loss still trains V through it (inside the clip range). Don't detach "
                       "new_values there."),
            KnownWrong("clipped term only", _value_clipped_only,
                       "You kept only the clipped error (V_clip − R)². PPO keeps the larger of the clipped and the "
                       "unclipped error, max((V − R)², (V_clip − R)²), so a critic that moved past ε the wrong way is "
                       "still penalised in full."),
            KnownWrong("ignores clip_eps", _value_ignores_clip,
                       "When clip_eps is a number, use the clipped form; only clip_eps=None means the plain ½ MSE."),
            KnownWrong("loss without gradient", under_no_grad(cartpole_ppo.value_loss),
                       _NO_GRAD_HINT.format(what="The critic would never learn: its values stay at their "
                                            "initialisation, and so would the advantages' baseline.")),
        ],
        known_right=[KnownRight("float64 loss", as_float64(cartpole_ppo.value_loss))]),
)
