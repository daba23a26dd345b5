"""The gridworlds of Sutton & Barto (2nd ed.), as Gymnasium-style transition tables.

States are numbered row by row: s = row * n_cols + col. Actions: 0 north, 1 south,
2 east, 3 west (`ACTIONS`). Also `random_mdp`, small random MDPs for the exercise checks.
"""

from __future__ import annotations

import numpy as np

from llmcourse.bellman import Transitions

ACTIONS = ("north", "south", "east", "west")
MOVES = ((-1, 0), (1, 0), (0, 1), (0, -1))  # (d_row, d_col) for each action
ARROWS = "↑↓→←"


def _grid(n_rows: int, n_cols: int, step) -> Transitions:
    """Build P from ``step(row, col, action) -> (prob, next_state, reward, terminated)``."""
    return {r * n_cols + c: {a: [step(r, c, a)] for a in range(4)} for r in range(n_rows) for c in range(n_cols)}


def sutton_barto_5x5() -> Transitions:
    """Example 3.5 (Fig. 3.2): a continuing 5×5 grid. Leaving the grid: reward -1, stay.
    Any action in A=(0,1) jumps to A'=(4,1) with +10; in B=(0,3) to B'=(2,3) with +5."""

    def step(r, c, a):
        if (r, c) == (0, 1):
            return (1.0, 4 * 5 + 1, 10.0, False)
        if (r, c) == (0, 3):
            return (1.0, 2 * 5 + 3, 5.0, False)
        r2, c2 = r + MOVES[a][0], c + MOVES[a][1]
        if not (0 <= r2 < 5 and 0 <= c2 < 5):
            return (1.0, r * 5 + c, -1.0, False)
        return (1.0, r2 * 5 + c2, 0.0, False)

    return _grid(5, 5, step)


def sutton_barto_4x4() -> Transitions:
    """Example 4.1 (Fig. 4.1): 4×4 grid, terminal corners 0 and 15, reward -1 per move;
    moves off the grid leave the state unchanged. Terminal states loop with reward 0."""
    terminal = {0, 15}

    def step(r, c, a):
        s = r * 4 + c
        if s in terminal:
            return (1.0, s, 0.0, True)
        r2, c2 = r + MOVES[a][0], c + MOVES[a][1]
        s2 = r2 * 4 + c2 if (0 <= r2 < 4 and 0 <= c2 < 4) else s
        return (1.0, s2, -1.0, s2 in terminal)

    return _grid(4, 4, step)


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """The equiprobable random policy: (n_states, n_actions), every entry 1/n_actions."""
    return np.full((n_states, n_actions), 1.0 / n_actions)


def random_mdp(rng: np.random.Generator, n_states: int = 5, n_actions: int = 3, n_outcomes: int = 2,
               p_terminated: float = 0.2) -> Transitions:
    """A random MDP with stochastic transitions, for testing: each (s, a) leads to
    ``n_outcomes`` next states with random probabilities and rewards; some are terminal."""
    P: Transitions = {}
    for s in range(n_states):
        P[s] = {}
        for a in range(n_actions):
            probs = rng.dirichlet(np.ones(n_outcomes))
            nexts = rng.integers(0, n_states, n_outcomes)
            rewards = np.round(rng.normal(0, 1, n_outcomes), 2)
            dones = rng.random(n_outcomes) < p_terminated
            P[s][a] = [(float(p), int(s2), float(r), bool(d)) for p, s2, r, d in zip(probs, nexts, rewards, dones)]
    return P


def random_policy(rng: np.random.Generator, n_states: int, n_actions: int) -> np.ndarray:
    """A random stochastic policy (rows sum to 1): (n_states, n_actions)."""
    return rng.dirichlet(np.ones(n_actions), size=n_states)
