"""DPO and DPO + SFT (RPO) on pairs sampled from the base model: chapter 08's runs over seeds 0/1/2.

Per seed: chapter 08's pairs (`dpo.chapter_pairs`: 1,000 training problems, each answered twice by the base
model and labelled by the rules, about 440 pairs), then chapter 08's budget (`DPOConfig`'s defaults): 40 steps of 32 pairs, β = 0.1, AdamW lr 1e-4, plain DPO and RPO (α = 1) from the
same base model on the same pairs. The held-out evaluation (`evaluate(model, k=4)`) runs every 10
steps (the notebook: every 20; evaluating does not change the training run), with the mean log-prob of
all the training pairs' chosen and rejected responses.
"""

from __future__ import annotations

import torch

from dataclasses import replace

from llmcourse.checkpoint import load_base_model
from llmcourse.dpo import RPO_ALPHA, DPOConfig, chapter_pairs, measured_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
CONFIG = DPOConfig(eval_every=10)


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        lines = [f"DPO on the base model's own pairs: {CONFIG.steps} steps x {CONFIG.batch_pairs} pairs, beta {CONFIG.beta:g}, "
                 f"lr {CONFIG.lr:g}; RPO adds alpha {RPO_ALPHA:g} x the chosen NLL per token; one thread; "
                 "held-out evaluation with 4 samples per problem",
                 f"{'seed':>4} {'run':<5} {'pairs':>5} {'sampled':>24} {'greedy':>15} {'reasoned share':>15} "
                 f"{'reasoned right':>15} {'chosen logp':>13} {'train s':>7}"]
        for seed in SEEDS:
            pairs = chapter_pairs(base, seed)
            start = None
            for name, alpha in (("DPO", 0.0), ("RPO", RPO_ALPHA)):
                cfg = replace(CONFIG, rpo_alpha=alpha, seed=seed)
                torch.manual_seed(seed)
                _, h, evals = measured_run(base, pairs, cfg, start=start)
                start = evals[0]
                first, last = evals[0], evals[-1]
                path = "/".join(f"{100 * e['sampled_accuracy']:.0f}" for e in evals)
                lines.append(f"{seed:>4} {name:<5} {len(pairs):>5} {path:>24} "
                             f"{_pct(first['greedy_accuracy'])}->{_pct(last['greedy_accuracy'])} "
                             f"{_pct(first['reasoned_share'])}->{_pct(last['reasoned_share'])} "
                             f"{_pct(first['reasoned_accuracy'])}->{_pct(last['reasoned_accuracy'])} "
                             f"{first['chosen_logp']:5.2f}->{last['chosen_logp']:5.2f} {h['seconds'][0]:7.1f}")
        lines.append("sampled: held-out sampled accuracy (pass@1) at steps " +
                     "/".join(str(s) for s in range(0, CONFIG.steps + 1, CONFIG.eval_every)) +
                     "; chosen logp: mean log-prob of the training pairs' chosen responses, before -> after")
        return lines
