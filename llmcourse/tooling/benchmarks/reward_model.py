"""The reward model of chapter 07: held-out pairwise accuracy over 3 seeds, against a format-only scorer.

Each seed samples its own training pairs (other training problems, other samples) and trains the shipped
configuration (`llmcourse.reward_model.RewardConfig`) from the base model on one thread; all are measured on
the same held-out pairs (`held_out_pairs`: the 256 held-out problems, 4 pairs of samples each). The
format-only line scores a response 1 if it reasons (`<think>`) and 0 otherwise: what a reward model that
learned nothing but the format would get (a tie counts as wrong).
"""

from __future__ import annotations

import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.runtime import torch_threads
from llmcourse.preferences import PreferencePairs
from llmcourse.reward_model import (RewardConfig, RewardModel, evaluate_pairs, held_out_pairs, pair_scores,
                                    pairwise_accuracy, train_reward_model, training_pairs)

SEEDS = (0, 1, 2)


def _kind(text: str, problem: tw.Problem) -> str:
    return ("right" if tw.is_correct(text, problem) else "wrong") + (" reasoned" if tw.is_reasoned(text) else " bare")


def accuracy_by_kind(rm: RewardModel, pairs: PreferencePairs) -> dict[str, tuple[int, float]]:
    """Pair kind ("right reasoned > wrong bare", …) -> (number of pairs, pairwise accuracy)."""
    with torch.no_grad():
        chosen, rejected = pair_scores(rm, pairs)
    kinds = [f"{_kind(c, p)} > {_kind(r, p)}" for p, c, r in zip(pairs.problems, pairs.chosen_text, pairs.rejected_text)]
    out = {}
    for k in sorted(set(kinds), key=kinds.count, reverse=True):
        idx = [i for i, x in enumerate(kinds) if x == k]
        out[k] = (len(idx), pairwise_accuracy(chosen[idx], rejected[idx]))
    return out


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        held = held_out_pairs(base)
        fmt = pairwise_accuracy(torch.tensor([float(tw.is_reasoned(t)) for t in held.chosen_text]),
                                torch.tensor([float(tw.is_reasoned(t)) for t in held.rejected_text]))
        cfg0 = RewardConfig()
        lines = [f"reward model: {cfg0.n_problems} training problems answered twice by the base model, {cfg0.steps} steps "
                 f"of {cfg0.batch_size} pairs, lr {cfg0.lr:g}, one thread",
                 f"held-out pairs: {len(held)}; format-only scorer (1 if reasoned): pairwise accuracy {fmt:.3f}",
                 f"{'seed':>4} {'train pairs':>11} {'held-out acc':>12} {'held-out loss':>13} {'right bare > wrong bare':>24} "
                 f"{'train s':>8}"]
        accs = []
        for seed in SEEDS:
            cfg = RewardConfig(seed=seed, problem_seed=cfg0.problem_seed + seed)
            pairs = training_pairs(base, cfg)
            rm = RewardModel.from_base(base)
            hist = train_reward_model(rm, pairs, cfg, progress=False)
            ev = evaluate_pairs(rm, held)
            bare = accuracy_by_kind(rm, held).get("right bare > wrong bare", (0, float("nan")))
            accs.append(ev["accuracy"])
            lines.append(f"{seed:>4} {len(pairs):>11} {ev['accuracy']:>12.3f} {ev['loss']:>13.3f} "
                         f"{bare[1]:>17.3f} ({bare[0]:>3}) {hist['seconds'][0]:>8.0f}")
        lines.append(f"held-out pairwise accuracy: mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f}, "
                     f"max {max(accs):.3f} over seeds {list(SEEDS)} (goal ≥ 0.90)")
        return lines
