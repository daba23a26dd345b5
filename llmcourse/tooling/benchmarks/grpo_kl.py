"""Where GRPO's KL acts, measured: k3 in the loss (the recipe's), k2 in the loss, k3 × ratio in the loss, k1 in the
reward, and no KL, at a β large enough for the term to matter; 3 seeds.

Each run is chapter 10's recipe (`llmcourse.grpo.RECIPE`: 40 updates × 16 problems × 8 samples, lr 2e-4, ε 0.2,
÷ std, per-sequence mean, μ 1) with β = ``BETA`` and the placement changed (``GRPOConfig.kl_estimator``,
``kl_in``). With μ = 1 the ratio π_θ/π_old is 1, and k3 × ratio has exactly k2's gradient token by token
(`llmcourse.kl`), so those two runs differ only by rounding. Evaluation: the 256 held-out problems, greedy and
16 samples per problem at temperature 1 (seed 0); the exact KL to the base model summed over each of the
model's own sampled responses (4 per problem), in nats per response (`llmcourse.evaluation.kl_to_model`); and
from training, the mean k3 per response token of the last 5 batches. Training time excludes evaluation, one thread.
"""

from __future__ import annotations

from dataclasses import replace

from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate, kl_to_model
from llmcourse.grpo import RECIPE, grpo_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
K = 16
BETA = 1.0
"""β at which the placements are compared: 25 times the recipe's 0.04, where the KL term visibly holds the
policy back (at 0.04 the KL to the base model barely moves: chapter 10)."""
PLACEMENTS = {
    "no KL (beta 0)": replace(RECIPE, beta=0.0),
    "k3 in the loss (GRPO, TRL)": replace(RECIPE, beta=BETA),
    "k2 in the loss": replace(RECIPE, beta=BETA, kl_estimator="k2"),
    "k3 x ratio in the loss": replace(RECIPE, beta=BETA, kl_estimator="k3_ratio"),
    "k1 in the reward": replace(RECIPE, beta=BETA, kl_estimator="k1", kl_in="reward"),
}


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _range(rows: list[dict], key: str, fmt=_pct) -> str:
    lo, hi = min(r[key] for r in rows), max(r[key] for r in rows)
    return f"{fmt(lo).strip()}–{fmt(hi).strip()}"


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        ev = evaluate(base, k=K)
        lines = [f"base model: sampled {_pct(ev['sampled_accuracy'])}, greedy {_pct(ev['greedy_accuracy'])}, "
                 f"format {_pct(ev['format_rate'])} (%)",
                 f"GRPO recipe with beta {BETA:g} (no-KL row: beta 0), one thread",
                 "", f"{'placement':<28} {'seed':>4} {'sampled':>7} {'greedy':>6} {'format':>6} {'KL/resp':>7} "
                 f"{'k3/token':>8} {'len':>5} {'train s':>7}"]
        summary = []
        for name, cfg in PLACEMENTS.items():
            rows = []
            for seed in SEEDS:
                model, h = grpo_run(cfg, seed)
                after = evaluate(model, k=K)
                row = dict(sampled=after["sampled_accuracy"], greedy=after["greedy_accuracy"],
                           format=after["format_rate"], kl=kl_to_model(model, base),
                           k3=sum(h["kl"][-5:]) / 5, length=sum(h["length"][-5:]) / 5)
                rows.append(row)
                lines.append(f"{name:<28} {seed:>4} {_pct(row['sampled']):>7} {_pct(row['greedy']):>6} "
                             f"{_pct(row['format']):>6} {row['kl']:7.2f} {row['k3']:8.3f} {row['length']:5.1f} "
                             f"{h['seconds'][0]:7.1f}")
            summary.append(f"{name:<28} sampled {_range(rows, 'sampled')}, greedy {_range(rows, 'greedy')}, "
                           f"format {_range(rows, 'format')}, KL/resp {_range(rows, 'kl', lambda x: f'{x:.2f}')}, "
                           f"k3/token {_range(rows, 'k3', lambda x: f'{x:.3f}')}")
        lines += ["", f"ranges over seeds {list(SEEDS)} (%; KL to the base model in nats per response):"]
        lines += ["  " + s for s in summary]
        lines.append("KL/resp: exact KL to the base model summed over a sampled response (4 per held-out problem); "
                     "k3/token: mean k3 per response token over the last 5 training batches; len: mean response "
                     "tokens over the last 5 batches")
        return lines
