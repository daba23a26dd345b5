"""Temporal-difference learning: MC and TD(0) prediction, SARSA and Q-learning control.

Tabular and sample-based: no transition table, only experience. Values are NumPy arrays,
``V: (n_states,)`` and ``Q: (n_states, n_actions)``. A transition is
``(state, action, reward, next_state, terminated)``; ``terminated`` marks a step into a
terminal state, past which nothing is bootstrapped (its value is 0 by definition).

The update functions return a *new* array and leave their input unchanged, so a learner's
version and the reference can be compared on the same input.

The control loops (`sarsa`, `q_learning`) run on a Gymnasium environment with discrete
states and actions (CliffWalking-v1) and take the action-selection and update functions as
arguments, so that a notebook can run them on the learner's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """An ε-greedy action for one state: random with probability ε, else greedy.

    q_values: (n_actions,). Exploring picks uniformly among *all* actions (the greedy one
    included); greedy picks uniformly among the tied best actions. So with n actions and a
    single best one, P(best) = 1 − ε + ε/n and P(other) = ε/n.

    >>> rng = np.random.default_rng(0)
    >>> [epsilon_greedy(np.array([0.0, 1.0, 1.0]), 0.0, rng) for _ in range(6)]   # ties: 1 or 2
    [2, 1, 1, 2, 2, 2]
    """
    if rng.random() < epsilon:
        return int(rng.integers(len(q_values)))
    best = np.flatnonzero(q_values == q_values.max())  # all tied best actions
    return int(best[rng.integers(len(best))])


def epsilon_greedy_probs(q_values: np.ndarray, epsilon: float) -> np.ndarray:
    """The probabilities that `epsilon_greedy` picks each action: (n_actions,).

    >>> epsilon_greedy_probs(np.array([1.0, 3.0, 3.0, 0.0]), 0.2)   # (1 − ε)/2 + ε/4 for the ties
    array([0.05, 0.45, 0.45, 0.05])
    """
    n = len(q_values)
    best = q_values == q_values.max()
    return (1 - epsilon) * best / best.sum() + epsilon / n


def returns(rewards: Sequence[float], gamma: float) -> np.ndarray:
    """G_t = R_{t+1} + γ G_{t+1} for every step of an episode: (T,) for T rewards.

    >>> returns([0.0, 0.0, 1.0], 0.5)
    array([0.25, 0.5 , 1.  ])
    """
    G = np.zeros(len(rewards))
    g = 0.0
    for t in reversed(range(len(rewards))):
        g = rewards[t] + gamma * g
        G[t] = g
    return G


def mc_update(V: np.ndarray, states: Sequence[int], rewards: Sequence[float], alpha: float,
              gamma: float = 1.0) -> np.ndarray:
    """Every-visit constant-α Monte Carlo, after one finished episode.

    states: S_0, …, S_{T-1} (T ints, the terminal state left out);
    rewards: R_1, …, R_T (T floats; ``rewards[t]`` follows ``states[t]``).
    Walks the episode backwards, t = T−1, …, 0 (as the book's algorithm does):
    G ← R_{t+1} + γ G, then V(S_t) ← V(S_t) + α [G − V(S_t)] at once, so a state visited
    twice is updated twice. Returns a new (n_states,) array.

    >>> mc_update(np.zeros(3), [0, 1, 0], [1.0, 0.0, 2.0], alpha=0.5, gamma=1.0)
    array([2., 1., 0.])

    By hand: t = 2: G = 2, V(0) = 0 + 0.5·(2 − 0) = 1; t = 1: G = 0 + 2 = 2, V(1) = 1;
    t = 0: G = 1 + 2 = 3, V(0) = 1 + 0.5·(3 − 1) = 2.
    """
    V = np.array(V, dtype=float)
    g = 0.0
    for t in reversed(range(len(states))):
        g = rewards[t] + gamma * g  # G_t
        V[states[t]] += alpha * (g - V[states[t]])
    return V


def td_error(V: np.ndarray, state: int, reward: float, next_state: int, terminated: bool, gamma: float) -> float:
    """δ = R + γ V(S') − V(S), with V(S') = 0 when S' is terminal."""
    return float(reward + gamma * V[next_state] * (not terminated) - V[state])


def td0_update(V: np.ndarray, state: int, reward: float, next_state: int, terminated: bool, alpha: float,
               gamma: float = 1.0) -> np.ndarray:
    """One TD(0) step: V(S) ← V(S) + α [R + γ V(S') − V(S)]; V(S') counts as 0 if terminated.

    Returns a new (n_states,) array.

    >>> td0_update(np.array([0.5, 0.5, 0.0]), state=0, reward=0.0, next_state=1, terminated=False, alpha=0.1)
    array([0.5, 0.5, 0. ])
    >>> td0_update(np.array([0.5, 0.5, 0.9]), state=1, reward=1.0, next_state=2, terminated=True, alpha=0.1)
    array([0.5 , 0.55, 0.9 ])
    """
    V = np.array(V, dtype=float)
    V[state] += alpha * td_error(V, state, reward, next_state, terminated, gamma)
    return V


def sarsa_update(Q: np.ndarray, state: int, action: int, reward: float, next_state: int, next_action: int,
                 terminated: bool, alpha: float, gamma: float = 1.0) -> np.ndarray:
    """One SARSA step, on-policy: the target uses the action A' the policy will really take.

    Q(S,A) ← Q(S,A) + α [R + γ Q(S',A') − Q(S,A)], with Q(S',·) = 0 if terminated.
    Q: (n_states, n_actions) -> a new (n_states, n_actions).
    """
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[next_state, next_action] * (not terminated)
    Q[state, action] += alpha * (target - Q[state, action])
    return Q


def q_learning_update(Q: np.ndarray, state: int, action: int, reward: float, next_state: int,
                      terminated: bool, alpha: float, gamma: float = 1.0) -> np.ndarray:
    """One Q-learning step, off-policy: the target uses the greedy action in S'.

    Q(S,A) ← Q(S,A) + α [R + γ max_a Q(S',a) − Q(S,A)], with Q(S',·) = 0 if terminated.
    Q: (n_states, n_actions) -> a new (n_states, n_actions).

    >>> Q = np.array([[0.0, 0.0], [5.0, 7.0]])
    >>> q_learning_update(Q, state=0, action=1, reward=-1.0, next_state=1, terminated=True, alpha=0.5)
    array([[ 0. , -0.5],
           [ 5. ,  7. ]])
    """
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[next_state].max() * (not terminated)
    Q[state, action] += alpha * (target - Q[state, action])
    return Q


# --------------------------------------------------------------------------- prediction runs


def td0_prediction(episodes: Sequence[tuple[Sequence[int], Sequence[float]]], V0: np.ndarray, alpha: float,
                   gamma: float = 1.0, update: Callable = td0_update) -> np.ndarray:
    """TD(0) on a list of episodes, updating after every step.

    Each episode is ``(states, rewards)`` with states S_0, …, S_T (the terminal S_T included)
    and rewards R_1, …, R_T. Returns the values after 0, 1, …, n episodes: (n + 1, n_states).
    """
    V = np.array(V0, dtype=float)
    history = [V.copy()]
    for states, rewards in episodes:
        T = len(rewards)
        for t in range(T):
            V = update(V, state=states[t], reward=rewards[t], next_state=states[t + 1], terminated=t == T - 1,
                       alpha=alpha, gamma=gamma)
        history.append(V.copy())
    return np.stack(history)


def mc_prediction(episodes: Sequence[tuple[Sequence[int], Sequence[float]]], V0: np.ndarray, alpha: float,
                  gamma: float = 1.0, update: Callable = mc_update) -> np.ndarray:
    """Constant-α MC on a list of episodes (same format as `td0_prediction`), updating after
    each episode. Returns the values after 0, 1, …, n episodes: (n + 1, n_states)."""
    V = np.array(V0, dtype=float)
    history = [V.copy()]
    for states, rewards in episodes:
        V = update(V, states=states[:-1], rewards=rewards, alpha=alpha, gamma=gamma)
        history.append(V.copy())
    return np.stack(history)


# --------------------------------------------------------------------------- control on a Gymnasium env


@dataclass
class ControlConfig:
    """Hyperparameters of SARSA / Q-learning (the defaults are Example 6.6's)."""

    n_episodes: int = 500
    """Episodes of learning."""
    alpha: float = 0.5
    """Step size α."""
    epsilon: float = 0.1
    """Exploration rate of the ε-greedy behaviour policy (fixed, not decayed)."""
    gamma: float = 1.0
    """Discount; the cliff walk is undiscounted."""
    max_steps: int = 10_000
    """Safety cap on the steps of one episode."""


def sarsa(env: gym.Env, config: ControlConfig, rng: np.random.Generator, select: Callable = epsilon_greedy,
          update: Callable = sarsa_update) -> tuple[np.ndarray, np.ndarray]:
    """On-policy TD control. Returns (Q: (n_states, n_actions), sum of rewards of each episode: (n_episodes,)).

    The episode's sum of rewards is the *online* return: what the ε-greedy agent really got
    while learning.
    """
    Q = np.zeros((env.observation_space.n, env.action_space.n))
    sums = np.zeros(config.n_episodes)
    for episode in range(config.n_episodes):
        state, _ = env.reset()
        action = select(Q[state], config.epsilon, rng)
        for _ in range(config.max_steps):
            next_state, reward, terminated, truncated, _ = env.step(action)
            next_action = select(Q[next_state], config.epsilon, rng)
            Q = update(Q, state=state, action=action, reward=float(reward), next_state=next_state,
                       next_action=next_action, terminated=terminated, alpha=config.alpha, gamma=config.gamma)
            sums[episode] += reward
            state, action = next_state, next_action
            if terminated or truncated:
                break
    return Q, sums


def q_learning(env: gym.Env, config: ControlConfig, rng: np.random.Generator, select: Callable = epsilon_greedy,
               update: Callable = q_learning_update) -> tuple[np.ndarray, np.ndarray]:
    """Off-policy TD control: behaves ε-greedily, learns the greedy policy's values.

    Returns (Q: (n_states, n_actions), sum of rewards of each episode: (n_episodes,)).
    """
    Q = np.zeros((env.observation_space.n, env.action_space.n))
    sums = np.zeros(config.n_episodes)
    for episode in range(config.n_episodes):
        state, _ = env.reset()
        for _ in range(config.max_steps):
            action = select(Q[state], config.epsilon, rng)
            next_state, reward, terminated, truncated, _ = env.step(action)
            Q = update(Q, state=state, action=action, reward=float(reward), next_state=next_state,
                       terminated=terminated, alpha=config.alpha, gamma=config.gamma)
            sums[episode] += reward
            state = next_state
            if terminated or truncated:
                break
    return Q, sums


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points ('valid' part only): (len(x) - window + 1,)."""
    return np.convolve(x, np.ones(window) / window, mode="valid")
