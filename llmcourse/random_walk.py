"""The random walk of Sutton & Barto, Example 6.2: MC vs TD(0) prediction.

Seven states in a row, numbered 0..6: 0 and 6 are terminal, 1..5 are A..E. Every episode
starts in C (3) and moves left or right with probability 1/2. Reaching 6 (right of E) gives
reward +1, everything else 0; no discounting. So v(s) is the probability of ending on the
right: v(A..E) = 1/6, 2/6, 3/6, 4/6, 5/6 (`TRUE_VALUES`).

An episode is ``(states, rewards)``: S_0 = 3, …, S_T (terminal, included) and R_1, …, R_T.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np

from llmcourse import td
from llmcourse.bellman import Transitions

N_STATES = 7
"""All states, the two terminal ones included."""
START = 3
"""C, the middle state."""
LABELS = ("A", "B", "C", "D", "E")
"""Names of the non-terminal states 1..5."""
TRUE_VALUES = np.arange(1, 6) / 6
"""v(A), …, v(E) = 1/6, …, 5/6."""
TD_ALPHAS = (0.15, 0.1, 0.05)
"""The step sizes of Fig. 6.2 (right) for TD(0)."""
MC_ALPHAS = (0.01, 0.02, 0.03, 0.04)
"""… and for constant-α MC."""


def initial_values() -> np.ndarray:
    """V_0: 0.5 for A..E, 0 for the terminal states (as in the book): (7,)."""
    V = np.full(N_STATES, 0.5)
    V[0] = V[-1] = 0.0
    return V


def transition_table() -> Transitions:
    """The walk as a Gymnasium-style table with one action ("step"), for checking with DP."""
    P: Transitions = {}
    for s in range(N_STATES):
        if s in (0, N_STATES - 1):
            P[s] = {0: [(1.0, s, 0.0, True)]}
        else:
            P[s] = {0: [(0.5, s - 1, 0.0, s - 1 == 0),
                        (0.5, s + 1, float(s + 1 == N_STATES - 1), s + 1 == N_STATES - 1)]}
    return P


def episode(rng: np.random.Generator) -> tuple[list[int], list[float]]:
    """One episode from C: (states S_0..S_T with the terminal S_T, rewards R_1..R_T)."""
    states, rewards = [START], []
    while 0 < states[-1] < N_STATES - 1:
        states.append(states[-1] + (1 if rng.random() < 0.5 else -1))
        rewards.append(1.0 if states[-1] == N_STATES - 1 else 0.0)
    return states, rewards


def episodes(rng: np.random.Generator, n: int) -> list[tuple[list[int], list[float]]]:
    """``n`` episodes (one run's worth of experience)."""
    return [episode(rng) for _ in range(n)]


def rms_error(history: np.ndarray) -> np.ndarray:
    """Root-mean-square error over A..E of each row of values: (n, 7) -> (n,)."""
    return np.sqrt(((history[:, 1:-1] - TRUE_VALUES) ** 2).mean(axis=1))


def rms_curves(all_episodes: list[list[tuple[list[int], list[float]]]], method: str, alphas: tuple[float, ...],
               update: Callable | None = None, progress: Callable = lambda x, **_: x) -> dict[float, np.ndarray]:
    """RMS error after 0..n episodes, averaged over runs, for each α: {α: (n + 1,)}.

    ``all_episodes[run]`` is one run's episodes; every method and α sees the same episodes
    (common random numbers, so the comparison is not blurred by different luck).
    ``method`` is ``"td"`` or ``"mc"``; ``update`` overrides the update function.
    """
    predict = td.td0_prediction if method == "td" else td.mc_prediction
    kwargs = {} if update is None else {"update": update}
    curves = {}
    for alpha in alphas:
        errors = [rms_error(predict(eps, initial_values(), alpha, **kwargs))
                  for eps in progress(all_episodes, desc=f"{method} α={alpha}", leave=False)]
        curves[alpha] = np.mean(errors, axis=0)
    return curves


def plot_estimates(histories: dict[str, np.ndarray], ax=None, title: str = ""):
    """Estimated values of A..E next to the true ones (Fig. 6.2 left). histories: {label: (7,)}."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(1, 6)
    ax.plot(x, TRUE_VALUES, "k--", marker="o", label="true values")
    for label, V in histories.items():
        ax.plot(x, V[1:-1], marker=".", label=label)
    ax.set_xticks(x, LABELS)
    ax.set_xlabel("state")
    ax.set_ylabel("estimated value")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def plot_rms(td_curves: dict[float, np.ndarray], mc_curves: dict[float, np.ndarray], ax=None, title: str = ""):
    """RMS error vs episodes for TD (solid) and MC (dashed), one line per α (Fig. 6.2 right)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for alpha, y in td_curves.items():
        ax.plot(y, "-", label=f"TD(0) α={alpha}")
    for alpha, y in mc_curves.items():
        ax.plot(y, "--", label=f"MC α={alpha}")
    ax.set_xlabel("episodes")
    ax.set_ylabel("RMS error, averaged over states and runs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return ax
