"""Helpers for Gymnasium's ``CliffWalking-v1`` (Sutton & Barto, Example 6.6).

A 4×12 grid, states numbered row by row (s = row·12 + col). Start at (3, 0) = 36, goal at
(3, 11) = 47; the cells (3, 1)…(3, 10) are the cliff: stepping in gives −100 and sends the
agent back to the start. Every other step gives −1. Actions: 0 up, 1 right, 2 down, 3 left
(Gymnasium's order, `MOVES`).
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from llmcourse import td

ENV_ID = "CliffWalking-v1"
SHAPE = (4, 12)
START, GOAL = 36, 47
CLIFF = tuple(range(37, 47))
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
"""(d_row, d_col) of Gymnasium's actions 0 up, 1 right, 2 down, 3 left."""


def make_env() -> gym.Env:
    """Gymnasium's own environment (deterministic; no time limit)."""
    return gym.make(ENV_ID)


def greedy_episode(env: gym.Env, Q: np.ndarray, max_steps: int = 100) -> tuple[list[int], float]:
    """Play one episode greedily with Q (no exploration; first best action on ties).

    Returns (the states visited from the start, [36, …, 47]; the sum of rewards). Stops at the
    goal or after ``max_steps`` (a greedy policy can loop forever when Q is not learned yet).
    """
    state, _ = env.reset()
    path, total = [int(state)], 0.0
    for _ in range(max_steps):
        state, reward, terminated, truncated, _ = env.step(int(np.argmax(Q[state])))
        path.append(int(state))
        total += float(reward)
        if terminated or truncated:
            break
    return path, total


def greedy_path(env: gym.Env, Q: np.ndarray, max_steps: int = 100) -> list[int]:
    """The states visited by the greedy policy of Q from the start: [36, …, 47] (see `greedy_episode`)."""
    return greedy_episode(env, Q, max_steps)[0]


def distance_from_cliff(path: list[int]) -> float:
    """Mean number of rows between the path and the cliff row, over the path's cells in
    columns 1..10 (the ones above the cliff): 1 for the edge path, 3 for the top row."""
    rows = [3 - s // SHAPE[1] for s in path if 1 <= s % SHAPE[1] <= 10]
    return float(np.mean(rows)) if rows else float("nan")


def compare(config: td.ControlConfig, n_runs: int, seed: int = 0, select: Callable = td.epsilon_greedy,
            sarsa_update: Callable = td.sarsa_update, q_learning_update: Callable = td.q_learning_update,
            progress: bool = True) -> dict[str, dict]:
    """SARSA and Q-learning, ``n_runs`` runs each, on the same run seeds.

    Returns {"SARSA": {...}, "Q-learning": {...}}, each with ``sums``: (n_runs, n_episodes),
    the online sums of rewards, and ``Q``: (n_states, n_actions), the Q-tables of the runs
    averaged. With α = 0.5 one run's table is noisy (its greedy policy can bump into a wall
    and loop); the average over runs is a steadier estimate of the same values.
    """
    env = make_env()
    results = {}
    methods = {"SARSA": (td.sarsa, sarsa_update), "Q-learning": (td.q_learning, q_learning_update)}
    for name, (learn, update) in methods.items():
        sums, Qs = [], []
        for run in tqdm(range(n_runs), desc=name, disable=not progress):
            rng = np.random.default_rng([seed, run])
            Q, s = learn(env, config, rng, select=select, update=update)
            sums.append(s)
            Qs.append(Q)
        results[name] = {"sums": np.stack(sums), "Q": np.mean(Qs, axis=0)}
    return results


def plot_paths(paths: dict[str, list[int]], ax=None, title: str = ""):
    """The 4×12 grid with the cliff, start and goal, and one line per path {label: states}."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    n_rows, n_cols = SHAPE
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    for s in CLIFF:
        r, c = divmod(s, n_cols)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, color="0.35"))
    ax.text(5.5, 3, "the cliff (−100, back to S)", ha="center", va="center", color="white", fontsize=9)
    for s, label in ((START, "S"), (GOAL, "G")):
        r, c = divmod(s, n_cols)
        ax.text(c, r, label, ha="center", va="center", fontsize=12, weight="bold")
    for x in np.arange(0.5, n_cols - 1):
        ax.axvline(x, color="0.85", lw=0.8, zorder=0)
    for y in np.arange(0.5, n_rows - 1):
        ax.axhline(y, color="0.85", lw=0.8, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])
    for k, (label, path) in enumerate(paths.items()):
        rows, cols = np.divmod(np.array(path), n_cols)
        offset = 0.08 * (k - (len(paths) - 1) / 2)  # keep overlapping segments visible
        ax.plot(cols + offset, rows + offset, "-o", lw=2.5, ms=4, label=label)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(paths), fontsize=9, frameon=False)
    ax.set_title(title, fontsize=10)
    return ax


def plot_online_returns(results: dict[str, dict], window: int = 10, ax=None, title: str = "",
                        ylim: tuple[float, float] = (-100, 0)):
    """Sum of rewards per episode, averaged over runs and smoothed over ``window`` episodes
    (Fig. of Example 6.6)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, res in results.items():
        mean = res["sums"].mean(axis=0)
        ax.plot(np.arange(window, len(mean) + 1), td.smooth(mean, window), label=name)
    ax.set_ylim(*ylim)
    ax.set_xlabel("episode")
    ax.set_ylabel("sum of rewards during episode")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9)
    return ax
