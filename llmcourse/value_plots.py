"""Plots of chapter 01's dynamic programming: value heatmaps with policy arrows, convergence curves."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from llmcourse.gridworld import MOVES


def plot_values(V: np.ndarray, shape: tuple[int, int], policy: np.ndarray | None = None, ax=None,
                title: str = "", moves: Sequence[tuple[int, int]] = MOVES, labels: dict[int, str] | None = None,
                fmt: str = "{:.1f}", cmap: str = "viridis"):
    """Heatmap of V on a grid, each cell labelled with its value; arrows for the policy.

    V: (n_states,), shape: (n_rows, n_cols), policy: (n_states, n_actions) or None.
    ``moves[a] = (d_row, d_col)`` says where action a points (FrozenLake's order differs).
    ``labels`` puts a letter under a cell's value (e.g. {5: "H"} for a hole).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(0.9 * shape[1] + 1, 0.9 * shape[0] + 0.4))
    grid = V.reshape(shape)
    ax.imshow(grid, cmap=cmap)
    lo, hi = grid.min(), grid.max()
    for s, v in enumerate(V):
        r, c = divmod(s, shape[1])
        bright = hi > lo and (v - lo) / (hi - lo) > 0.6
        color = "black" if bright else "white"
        ax.text(c, r - (0.22 if policy is not None else 0), fmt.format(v), ha="center", va="center",
                fontsize=8, color=color)
        if labels and s in labels:
            ax.text(c, r + 0.3, labels[s], ha="center", va="center", fontsize=9, color=color, weight="bold")
        elif policy is not None:
            for a, p in enumerate(policy[s]):
                if p > 0:
                    dr, dc = moves[a]
                    ax.arrow(c, r + 0.12, 0.25 * dc, 0.25 * dr, head_width=0.1, head_length=0.08,
                             color=color, length_includes_head=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return ax


def plot_convergence(curves: dict[str, np.ndarray], ax=None, ylabel: str = "max |V_{k+1} − V_k|",
                     title: str = ""):
    """Log-scale curves of a per-sweep quantity, one line per label."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for label, y in curves.items():
        ax.semilogy(np.arange(1, len(y) + 1), y, label=label)
    ax.set_xlabel("sweep k")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax
