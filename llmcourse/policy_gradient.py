"""Policy gradients: rewards-to-go, the REINFORCE loss, GAE, and a variance measurement.

The policy-gradient theorem (log-derivative trick)::

    ∇J(θ) = E_τ[ Σ_t Ψ_t ∇ log π_θ(a_t | s_t) ]

with Ψ_t = R(τ) (the whole return), the reward-to-go G_t, or an advantage A_t = G_t − b(s_t).
Every function here takes and returns torch tensors; time is the first axis.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


def rewards_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + γ r_{t+1} + γ² r_{t+2} + … for one episode, for every t.

    rewards: (T,) float, the reward after each action of one episode. Returns (T,), same dtype.

    >>> rewards_to_go(torch.tensor([1.0, 1.0, 1.0]), 0.5)
    tensor([1.7500, 1.5000, 1.0000])
    """
    out = torch.zeros_like(rewards)  # (T,)
    running = torch.zeros((), dtype=rewards.dtype)
    for t in reversed(range(len(rewards))):  # walk backwards: G_t = r_t + γ G_{t+1}
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The loss whose gradient is minus the REINFORCE estimate of ∇J.

    log_probs: (B,) log π_θ(a_t|s_t) of the actions taken (carry the gradient).
    advantages: (B,) the weights Ψ_t (returns-to-go, or minus a baseline); they are constants
    for the policy's gradient, so they are detached (a critic's gradient must not flow here).
    Returns a scalar: −mean_t(Ψ_t · log π_θ(a_t|s_t)). Minimising it ascends J.

    >>> reinforce_loss(torch.log(torch.tensor([0.5, 0.25])), torch.tensor([2.0, 1.0]))
    tensor(1.3863)
    """
    return -(advantages.detach() * log_probs).mean()


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation over a rollout that may contain episode ends.

    rewards, values, dones: (T,) or (T, N) for N parallel environments; time is axis 0.
      rewards[t]: reward after action a_t;  values[t] = V(s_t);
      dones[t] = 1.0 if the episode ended with step t (s_{t+1} is terminal, or a fresh reset).
    last_value: () or (N,), V(s_T) of the state after the last step (used unless dones[T-1]).
    Returns advantages of the shape of ``rewards``:

        δ_t = r_t + γ V(s_{t+1}) (1 − done_t) − V(s_t)
        A_t = δ_t + γ λ (1 − done_t) A_{t+1}

    λ = 0 gives the TD error δ_t; λ = 1 gives G_t − V(s_t) (Monte-Carlo, bootstrapped at T).

    >>> gae(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor(5.0), 0.5, 1.0)
    tensor([1.5000, 1.0000])
    """
    advantages = torch.zeros_like(rewards)  # (T,) or (T, N)
    next_advantage = torch.zeros_like(rewards[0])  # () or (N,)
    next_value = last_value
    for t in reversed(range(len(rewards))):
        nextnonterminal = 1.0 - dones[t]  # 0 where the episode ended at step t
        delta = rewards[t] + gamma * next_value * nextnonterminal - values[t]
        next_advantage = delta + gamma * lam * nextnonterminal * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages


# --------------------------------------------------------------------------- variance of the estimator


def linear_softmax_policy(seed: int = 0, obs_dim: int = 4, n_actions: int = 2, scale: float = 0.5) -> torch.Tensor:
    """A fixed random policy π(a|s) = softmax(s·W + b)_a; returns θ = (W, b) packed as (obs_dim + 1, n_actions)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(obs_dim + 1, n_actions, generator=g, dtype=torch.float64)


def collect_episodes(theta: torch.Tensor, n_episodes: int, seed: int = 0,
                     env_id: str = "CartPole-v1") -> list[dict[str, torch.Tensor]]:
    """Roll out the linear softmax policy ``theta`` for whole episodes.

    Returns one dict per episode: obs (T, obs_dim), actions (T,), rewards (T,) (float64).
    """
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    W = theta.numpy()
    episodes = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)
        o_list, a_list, r_list = [], [], []
        done = False
        while not done:
            logits = obs @ W[:-1] + W[-1]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            a = int(rng.random() < p[1]) if len(p) == 2 else int(rng.choice(len(p), p=p))
            o_list.append(obs)
            a_list.append(a)
            obs, r, terminated, truncated, _ = env.step(a)
            r_list.append(r)
            done = terminated or truncated
        episodes.append(dict(obs=torch.tensor(np.array(o_list), dtype=torch.float64),
                             actions=torch.tensor(a_list), rewards=torch.tensor(r_list, dtype=torch.float64)))
    env.close()
    return episodes


def score_function(theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """∇_θ log π_θ(a_t|s_t) for every step, flattened: (T, (obs_dim + 1) · n_actions).

    For a linear softmax policy it is [s_t, 1] ⊗ (onehot(a_t) − π(·|s_t)).
    """
    feats = torch.cat([obs, torch.ones(len(obs), 1, dtype=obs.dtype)], dim=1)  # (T, obs_dim + 1)
    probs = torch.softmax(feats @ theta, dim=1)  # (T, n_actions)
    onehot = torch.nn.functional.one_hot(actions, theta.shape[1]).to(obs.dtype)  # (T, n_actions)
    return (feats[:, :, None] * (onehot - probs)[:, None, :]).flatten(1)  # (T, (obs_dim + 1) · n_actions)


def per_episode_gradients(theta: torch.Tensor, episodes: list[dict[str, torch.Tensor]], gamma: float,
                          weighting: str, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """One REINFORCE estimate of ∇J per episode: (n_episodes, n_params).

    weighting: ``"return"`` (Ψ_t = R(τ), the whole discounted return),
    ``"to-go"`` (Ψ_t = G_t), or ``"baseline"`` (Ψ_t = G_t − baseline[t], baseline: (T_max,)).
    """
    psis = []
    for ep in episodes:
        g = rewards_to_go(ep["rewards"], gamma)  # (T,)
        if weighting == "return":
            psis.append(g[0].expand_as(g))
        elif weighting == "to-go":
            psis.append(g)
        elif weighting == "baseline":
            psis.append(g - baseline[: len(g)])
        else:
            raise ValueError(weighting)
    lengths = torch.tensor([len(ep["actions"]) for ep in episodes])
    scores = score_function(theta, torch.cat([ep["obs"] for ep in episodes]),
                            torch.cat([ep["actions"] for ep in episodes]))  # (ΣT, n_params)
    psi = torch.cat(psis)  # (ΣT,)
    episode_of_step = torch.repeat_interleave(torch.arange(len(episodes)), lengths)  # (ΣT,)
    grads = torch.zeros(len(episodes), scores.shape[1], dtype=scores.dtype)
    return grads.index_add_(0, episode_of_step, psi[:, None] * scores)  # Σ_t Ψ_t ∇log π, per episode


def time_baseline(episodes: list[dict[str, torch.Tensor]], gamma: float, horizon: int = 500) -> torch.Tensor:
    """b(t) = the average reward-to-go at time step t (0 where no episode lasts that long): (horizon,).

    Fitted on *other* episodes than the ones whose gradient it reduces, so it cannot depend on their actions.
    """
    total = torch.zeros(horizon, dtype=torch.float64)
    count = torch.zeros(horizon, dtype=torch.float64)
    for ep in episodes:
        g = rewards_to_go(ep["rewards"], gamma)
        total[: len(g)] += g
        count[: len(g)] += 1
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
