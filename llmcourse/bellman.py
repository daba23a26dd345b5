"""Returns, Bellman backups and dynamic programming on a tabular MDP.

An MDP is given by its transition table in Gymnasium's format (``env.unwrapped.P`` of
FrozenLake, CliffWalking, Taxi)::

    P[s][a] = [(prob, next_state, reward, terminated), ...]

``terminated`` marks a transition into a terminal state: nothing is bootstrapped past it.
A policy is an array ``policy[s, a] = π(a|s)`` of shape (n_states, n_actions).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Transitions = dict[int, dict[int, list[tuple[float, int, float, bool]]]]


def n_states_actions(P: Transitions) -> tuple[int, int]:
    """(number of states, number of actions) of a transition table."""
    return len(P), len(P[0])


def discounted_return(rewards: Sequence[float], gamma: float) -> float:
    """G_0 = r_1 + γ r_2 + γ² r_3 + … for the rewards of one episode.

    >>> discounted_return([1, 0, 2], 0.5)   # 1 + 0.5·0 + 0.25·2
    1.5
    """
    g = 0.0
    for r in reversed(rewards):  # G_t = r_{t+1} + γ G_{t+1}, computed from the end
        g = r + gamma * g
    return float(g)


def q_from_v(P: Transitions, V: np.ndarray, gamma: float) -> np.ndarray:
    """One-step lookahead: q(s, a) = Σ_{s'} p(s'|s,a) [r + γ v(s')], with v(terminal) = 0.

    V: (n_states,) -> returns (n_states, n_actions).
    """
    n_s, n_a = n_states_actions(P)
    q = np.zeros((n_s, n_a))
    for s in range(n_s):
        for a in range(n_a):
            for prob, s_next, reward, terminated in P[s][a]:
                q[s, a] += prob * (reward + gamma * V[s_next] * (not terminated))
    return q


def bellman_expectation_backup(P: Transitions, policy: np.ndarray, V: np.ndarray, gamma: float) -> np.ndarray:
    """One synchronous sweep: v'(s) = Σ_a π(a|s) q(s, a), all states from the same old V.

    policy: (n_states, n_actions), V: (n_states,) -> (n_states,)
    """
    return (policy * q_from_v(P, V, gamma)).sum(axis=1)


def policy_evaluation(P: Transitions, policy: np.ndarray, gamma: float, theta: float = 1e-10,
                      max_sweeps: int = 100_000) -> np.ndarray:
    """Iterative policy evaluation with synchronous sweeps, from V = 0.

    Repeats the Bellman expectation backup until the largest change in a sweep is below
    ``theta`` (or ``max_sweeps`` is reached). Returns V: (n_states,).
    """
    V = np.zeros(len(P))
    for _ in range(max_sweeps):
        V_new = bellman_expectation_backup(P, policy, V, gamma)
        delta = np.abs(V_new - V).max()
        V = V_new
        if delta < theta:
            break
    return V


def policy_evaluation_in_place(P: Transitions, policy: np.ndarray, gamma: float, theta: float = 1e-10,
                               max_sweeps: int = 100_000) -> tuple[np.ndarray, int]:
    """The in-place variant (Sutton & Barto's boxed algorithm): each state's new value is
    used at once by the states after it in the same sweep. Returns (V, sweeps)."""
    n_s, n_a = n_states_actions(P)
    V = np.zeros(n_s)
    for sweep in range(1, max_sweeps + 1):
        delta = 0.0
        for s in range(n_s):
            v_s = sum(policy[s, a] * sum(p * (r + gamma * V[s2] * (not done)) for p, s2, r, done in P[s][a])
                      for a in range(n_a))
            delta = max(delta, abs(v_s - V[s]))
            V[s] = v_s
        if delta < theta:
            return V, sweep
    return V, max_sweeps


def evaluation_sweeps(P: Transitions, policy: np.ndarray, gamma: float, n_sweeps: int) -> np.ndarray:
    """V_0, V_1, …, V_n of synchronous policy evaluation from V_0 = 0: (n_sweeps + 1, n_states)."""
    history = [np.zeros(len(P))]
    for _ in range(n_sweeps):
        history.append(bellman_expectation_backup(P, policy, history[-1], gamma))
    return np.stack(history)


def greedy_policy(q: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """The greedy policy for q, splitting probability equally between tied best actions.

    q: (n_states, n_actions) -> policy (n_states, n_actions); actions within ``tol`` of the
    best count as tied.

    >>> greedy_policy(np.array([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]))
    array([[0. , 0.5, 0.5],
           [1. , 0. , 0. ]])
    """
    best = q >= q.max(axis=1, keepdims=True) - tol
    return best / best.sum(axis=1, keepdims=True)


def value_iteration(P: Transitions, gamma: float, theta: float = 1e-10,
                    max_sweeps: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Value iteration: v(s) <- max_a q(s, a) until the largest change is below ``theta``.

    Returns (V: (n_states,), the greedy policy for V: (n_states, n_actions)).
    """
    V = np.zeros(len(P))
    for _ in range(max_sweeps):
        V_new = q_from_v(P, V, gamma).max(axis=1)
        delta = np.abs(V_new - V).max()
        V = V_new
        if delta < theta:
            break
    return V, greedy_policy(q_from_v(P, V, gamma))


def policy_iteration(P: Transitions, gamma: float, theta: float = 1e-10) -> tuple[np.ndarray, np.ndarray, int]:
    """Policy iteration from the uniform random policy: evaluate, improve, until stable.

    Returns (V, policy, number of improvement steps).
    """
    n_s, n_a = n_states_actions(P)
    policy = np.full((n_s, n_a), 1.0 / n_a)
    for step in range(1, 1000):
        V = policy_evaluation(P, policy, gamma, theta)
        new_policy = greedy_policy(q_from_v(P, V, gamma))
        if np.array_equal(new_policy, policy):
            return V, policy, step
        policy = new_policy
    return V, policy, step


def sweep_deltas(P: Transitions, gamma: float, n_sweeps: int, policy: np.ndarray | None = None) -> np.ndarray:
    """max_s |V_{k+1}(s) - V_k(s)| for k = 0..n_sweeps-1: of policy evaluation when a policy
    is given, else of value iteration. For convergence plots."""
    V = np.zeros(len(P))
    deltas = []
    for _ in range(n_sweeps):
        q = q_from_v(P, V, gamma)
        V_new = (policy * q).sum(axis=1) if policy is not None else q.max(axis=1)
        deltas.append(np.abs(V_new - V).max())
        V = V_new
    return np.array(deltas)
