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


# Published values, transcribed from Sutton & Barto (2nd ed., 2018), one decimal as printed.
BOOK_FIG_3_2 = np.array([[3.3, 8.8, 4.4, 5.3, 1.5],
                         [1.5, 3.0, 2.3, 1.9, 0.5],
                         [0.1, 0.7, 0.7, 0.4, -0.4],
                         [-1.0, -0.4, -0.4, -0.6, -1.2],
                         [-1.9, -1.3, -1.2, -1.4, -2.0]])
"""Fig. 3.2 (right): v_π of the equiprobable random policy on the 5×5 grid, γ = 0.9."""

BOOK_FIG_3_5 = np.array([[22.0, 24.4, 22.0, 19.4, 17.5],
                         [19.8, 22.0, 19.8, 17.8, 16.0],
                         [17.8, 19.8, 17.8, 16.0, 14.4],
                         [16.0, 17.8, 16.0, 14.4, 13.0],
                         [14.4, 16.0, 14.4, 13.0, 11.7]])
"""Fig. 3.5 (middle): v* on the 5×5 grid, γ = 0.9."""

BOOK_FIG_3_5_POLICY = [["→", "↑↓→←", "←", "↑↓→←", "←"],
                       ["↑→", "↑", "↑←", "←", "←"],
                       ["↑→", "↑", "↑←", "↑←", "↑←"],
                       ["↑→", "↑", "↑←", "↑←", "↑←"],
                       ["↑→", "↑", "↑←", "↑←", "↑←"]]
"""Fig. 3.5 (right): the optimal actions in each cell (↑→ is the book's diagonal ↗)."""

BOOK_FIG_4_1 = {
    0: np.zeros((4, 4)),
    1: np.array([[0.0, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, 0]]),
    2: np.array([[0.0, -1.7, -2.0, -2.0], [-1.7, -2.0, -2.0, -2.0], [-2.0, -2.0, -2.0, -1.7], [-2.0, -2.0, -1.7, 0.0]]),
    3: np.array([[0.0, -2.4, -2.9, -3.0], [-2.4, -2.9, -3.0, -2.9], [-2.9, -3.0, -2.9, -2.4], [-3.0, -2.9, -2.4, 0.0]]),
    10: np.array([[0.0, -6.1, -8.4, -9.0], [-6.1, -7.7, -8.4, -8.4], [-8.4, -8.4, -7.7, -6.1], [-9.0, -8.4, -6.1, 0.0]]),
    "inf": np.array([[0.0, -14, -20, -22], [-14, -18, -20, -20], [-20, -20, -18, -14], [-22, -20, -14, 0.0]]),
}
"""Fig. 4.1 (left): v_k of iterative policy evaluation for the random policy on the 4×4 grid,
γ = 1, after k = 0, 1, 2, 3, 10 sweeps and at convergence. The book cuts to one decimal
(v_2 = -1.75 is printed -1.7)."""


def policy_arrows(policy: np.ndarray, shape: tuple[int, int], arrows: str = ARROWS) -> list[list[str]]:
    """The policy's best actions in each cell as arrow strings, e.g. "↑←" for a tie."""
    return [["".join(arrows[a] for a in range(policy.shape[1]) if policy[r * shape[1] + c, a] > 0)
             for c in range(shape[1])] for r in range(shape[0])]


def format_grid(values, shape: tuple[int, int] | None = None, fmt: str = "{:6.1f}") -> str:
    """A grid of numbers (or strings) as aligned text rows, for comparing with a printed table."""
    grid = np.asarray(values, dtype=object)
    if shape is not None:
        grid = grid.reshape(shape)
    return "\n".join(" ".join(fmt.format(v) if not isinstance(v, str) else f"{v:>6}" for v in row) for row in grid)
