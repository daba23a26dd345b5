"""The policy's entropy along GRPO training, and what DAPO's clip-higher does to it; 3 seeds.

Each run is chapter 10's recipe (`llmcourse.grpo.RECIPE`) with μ = 2 or 4 optimizer steps per sampled batch,
since with μ = 1 the ratio is 1 and no clip acts, and the clip's upper side ε_high = 0.2 (symmetric, GRPO) or 0.28
(DAPO's clip-higher, Yu et al. 2025), ε_low = 0.2. The entropy is the mean next-token entropy of the policy over the
response tokens of each sampled batch, before its first step (``train_grpo``'s ``entropy``): the first and last 5
batches' means and the lowest batch. Evaluation: the 256 held-out problems, greedy and 16 samples per problem at
temperature 1 (seed 0). Training time excludes evaluation, one thread.
"""

from __future__ import annotations

from dataclasses import replace

from llmcourse.evaluation import evaluate, pass_at_k_curve
from llmcourse.grpo import RECIPE, grpo_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
K = 16
CLIP_HIGHER = 0.28
"""DAPO's ε_high."""
RUNS = {f"mu {mu}, eps_high {eps_high:g}": replace(RECIPE, epochs=mu, eps_high=eps_high)
        for mu in (2, 4) for eps_high in (RECIPE.eps_high, CLIP_HIGHER)}


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def run() -> list[str]:
    with torch_threads(1):
        lines = [f"GRPO recipe with mu steps per batch and the clip's upper side eps_high (eps_low {RECIPE.eps_low:g}); "
                 "entropy in nats per response token; one thread", "",
                 f"{'run':<20} {'seed':>4} {'H first5':>8} {'H last5':>7} {'H min':>6} {'sampled':>7} {'greedy':>6} "
                 f"{'format':>6} {'p@16':>5} {'clip':>6} {'train s':>7}"]
        summary = []
        for name, cfg in RUNS.items():
            rows = []
            for seed in SEEDS:
                model, h = grpo_run(cfg, seed)
                ev = evaluate(model, k=K)
                row = dict(h0=sum(h["entropy"][:5]) / 5, h1=sum(h["entropy"][-5:]) / 5, hmin=min(h["entropy"]),
                           sampled=ev["sampled_accuracy"], greedy=ev["greedy_accuracy"], format=ev["format_rate"],
                           p16=pass_at_k_curve(ev["sampled_correct"], K)[-1],
                           clip=sum(h["clip_fraction"]) / len(h["clip_fraction"]))
                rows.append(row)
                lines.append(f"{name:<20} {seed:>4} {row['h0']:8.3f} {row['h1']:7.3f} {row['hmin']:6.3f} "
                             f"{_pct(row['sampled']):>7} {_pct(row['greedy']):>6} {_pct(row['format']):>6} "
                             f"{_pct(row['p16']):>5} {100 * row['clip']:5.2f}% {h['seconds'][0]:7.1f}")

            def rng(key, fmt=lambda x: _pct(x).strip()):
                return f"{fmt(min(r[key] for r in rows))}–{fmt(max(r[key] for r in rows))}"
            summary.append(f"{name:<20} entropy last 5 {rng('h1', lambda x: f'{x:.3f}')} (first 5 "
                           f"{rng('h0', lambda x: f'{x:.3f}')}), sampled {rng('sampled')}, greedy {rng('greedy')}, "
                           f"format {rng('format')}, pass@16 {rng('p16')}, clip fraction "
                           f"{rng('clip', lambda x: f'{100 * x:.2f}%')}")
        lines += ["", f"ranges over seeds {list(SEEDS)} (%):"] + ["  " + s for s in summary]
        lines.append("H: mean next-token entropy over the response tokens of a sampled batch; clip: mean share of "
                     "tokens clipped per batch")
        return lines
