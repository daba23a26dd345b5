"""Running a policy on Gymnasium's FrozenLake (chapter 01): the share of episodes that reach the goal."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def success_rate(env: gym.Env, policy: np.ndarray | None, n_episodes: int, seed: int = 0) -> float:
    """Fraction of episodes that end with a positive reward (FrozenLake: reaching the goal).

    policy: (n_states, n_actions) probabilities, sampled each step (ties of a greedy policy
    are broken at random); ``None`` means uniformly random actions.
    """
    rng = np.random.default_rng(seed)
    n_actions = env.action_space.n
    successes = 0
    state, _ = env.reset(seed=seed)
    for _ in range(n_episodes):
        done = False
        while not done:
            probs = policy[state] if policy is not None else np.full(n_actions, 1.0 / n_actions)
            action = int(rng.choice(n_actions, p=probs))
            state, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        successes += reward > 0
        state, _ = env.reset()
    return successes / n_episodes
