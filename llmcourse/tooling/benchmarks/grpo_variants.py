"""Chapter 10's GRPO recipe and the variants the field argues about, over 3 seeds: accuracy, format, pass@k, time.

The recipe (`llmcourse.grpo.RECIPE`, the notebook's run): 40 updates of 16 training problems × 8 samples, lr 2e-4, the clipped
surrogate with ε = 0.2, β = 0.04 times the k3 KL to the base model, advantages divided by the group's std and
the loss averaged per sequence (GRPO as published), one optimizer step per batch (μ = 1). Each variant changes
one thing: no std and Dr. GRPO's constant divisor (Liu et al. 2025), DAPO's per-token average (Yu et al. 2025),
μ = 2 steps per batch (the clip then acts); two other algorithms on the same budget: RLOO's leave-one-out baseline
(Ahmadian et al. 2024, no std) and GSPO's one ratio per response with its clip range 3e-4/4e-4 (Zheng et al. 2025;
at μ = 2, since with μ = 1 GSPO's step is GRPO's). Evaluation: the 256 held-out problems, greedy and 16 samples per
problem at temperature 1 (seed 0), before and after; training time excludes evaluation, one thread.
"""

from __future__ import annotations

from dataclasses import replace

from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate, pass_at_k_curve
from llmcourse.grpo import RECIPE, grpo_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
K = 16
VARIANTS = {
    "GRPO (recipe)": RECIPE,
    "Dr. GRPO: no std, sum / (B·48)": replace(RECIPE, scale_rewards=False, aggregation="dr_grpo"),
    "DAPO token mean": replace(RECIPE, aggregation="token"),
    "no std, sequence mean": replace(RECIPE, scale_rewards=False),
    "GRPO, mu = 2": replace(RECIPE, epochs=2),
    "RLOO: leave-one-out, no std": replace(RECIPE, advantage="rloo", scale_rewards=False),
    "GSPO: sequence ratio, mu = 2": replace(RECIPE, ratio_level="sequence", epochs=2, eps_low=3e-4, eps_high=4e-4),
}
KS = (1, 2, 4, 8, 16)


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _measure(ev: dict) -> dict:
    curve = pass_at_k_curve(ev["sampled_correct"], K)
    return dict(sampled=ev["sampled_accuracy"], greedy=ev["greedy_accuracy"], format=ev["format_rate"],
                reasoned=ev["reasoned_share"], curve=curve)


def run() -> list[str]:
    with torch_threads(1):
        base = _measure(evaluate(load_base_model(), k=K))
        lines = ["base model, 256 held-out problems, 16 samples each (%):",
                 f"  sampled {_pct(base['sampled'])}, greedy {_pct(base['greedy'])}, format {_pct(base['format'])}, "
                 f"reasoned {_pct(base['reasoned'])}; pass@k " + ", ".join(f"{k}: {_pct(base['curve'][k - 1]).strip()}"
                                                                          for k in KS),
                 "", f"{'variant':<32} {'seed':>4} {'sampled':>7} {'greedy':>6} {'format':>6} {'reasoned':>8} "
                 + " ".join(f"{'p@' + str(k):>5}" for k in KS)
                 + f" {'len':>5} {'KL':>6} {'H':>5} {'clip':>5} {'train s':>7} {'reward/s':>8}"]
        summary = []
        for name, cfg in VARIANTS.items():
            rows = []
            for seed in SEEDS:
                model, h = grpo_run(cfg, seed)
                after = _measure(evaluate(model, k=K))
                secs = h["seconds"][0]
                gain = (sum(h["reward"][-5:]) - sum(h["reward"][:5])) / 5 / secs     # reward per update, late − early
                rows.append(after)
                lines.append(f"{name:<32} {seed:>4} {_pct(after['sampled']):>7} {_pct(after['greedy']):>6} "
                             f"{_pct(after['format']):>6} {_pct(after['reasoned']):>8} "
                             + " ".join(f"{_pct(after['curve'][k - 1]):>5}" for k in KS)
                             + f" {sum(h['length'][-5:]) / 5:5.1f} {sum(h['kl'][-5:]) / 5:6.3f} "
                             f"{sum(h['entropy'][-5:]) / 5:5.3f} "
                             f"{max(h['clip_fraction']):5.3f} {secs:7.1f} {gain:8.4f}")
            summary.append(f"{name:<32} sampled {_pct(min(r['sampled'] for r in rows))}–{_pct(max(r['sampled'] for r in rows)).strip()}, "
                           f"greedy {_pct(min(r['greedy'] for r in rows))}–{_pct(max(r['greedy'] for r in rows)).strip()}, "
                           f"format {_pct(min(r['format'] for r in rows))}–{_pct(max(r['format'] for r in rows)).strip()}, "
                           f"pass@16 {_pct(min(r['curve'][-1] for r in rows))}–{_pct(max(r['curve'][-1] for r in rows)).strip()}")
        lines += ["", "ranges over seeds " + str(list(SEEDS)) + " (%; base: sampled " + _pct(base["sampled"]).strip()
                  + ", greedy " + _pct(base["greedy"]).strip() + ", pass@16 " + _pct(base["curve"][-1]).strip() + "):"]
        lines += ["  " + s for s in summary]
        lines.append("len: mean response tokens, KL: mean k3 per token, H: mean token entropy (nats), all over the "
                     "last 5 updates; clip: largest "
                     "clip fraction of a batch; reward/s: (mean reward of the last 5 updates − first 5) / training s")
        return lines
