"""DPO, DPO + SFT (RPO), ORPO and KTO on pairs sampled from the base model: chapter 08's runs over seeds 0/1/2.

Per seed: chapter 08's pairs (`dpo.chapter_pairs`: 1,000 training problems, each answered twice by the base
model and labelled by the rules, about 440 pairs), then four runs from the same base model on the same pairs,
each with its recipe in `llmcourse.dpo`: plain DPO and RPO (α = 1) with `DPOConfig`'s defaults (40 steps of 32
pairs, β = 0.1, AdamW lr 1e-4), ORPO with `ORPOConfig`'s (the same budget, λ = 0.1, no reference) and KTO with
`KTOConfig`'s (40 steps of 64 unpaired examples, the chosen responses desirable and the rejected ones undesirable,
β = 0.1, λ_D = λ_U = 1). The held-out evaluation (`evaluate(model, k=4)`) runs every 10 steps (the notebook: every
20; evaluating does not change the training run), with the mean log-prob of all the training pairs' chosen and
rejected responses. Training seconds include each run's reference pass (none for ORPO).

Memory: every run holds the policy and its AdamW state (3 × 847,616 floats). Besides them, DPO and RPO hold the
reference's log-probs of the 2N responses (computed once, no model copy); KTO those of its 2N examples and of each
step's 64 mismatched rows; ORPO nothing. The column `ref logps` counts them as the loops report them.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from llmcourse.checkpoint import load_base_model
from llmcourse.dpo import RPO_ALPHA, DPOConfig, KTOConfig, ORPOConfig, chapter_pairs, measured_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
CONFIG = DPOConfig(eval_every=10)
ORPO_CONFIG = ORPOConfig(eval_every=10)
KTO_CONFIG = KTOConfig(eval_every=10)


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _runs(seed: int) -> dict:
    return {"DPO": replace(CONFIG, seed=seed), "RPO": replace(CONFIG, rpo_alpha=RPO_ALPHA, seed=seed),
            "ORPO": replace(ORPO_CONFIG, seed=seed), "KTO": replace(KTO_CONFIG, seed=seed)}


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        lines = [f"DPO/RPO: {CONFIG.steps} steps x {CONFIG.batch_pairs} pairs, beta {CONFIG.beta:g}, lr {CONFIG.lr:g}, "
                 f"RPO alpha {RPO_ALPHA:g}; ORPO: {ORPO_CONFIG.steps} x {ORPO_CONFIG.batch_pairs} pairs, lambda "
                 f"{ORPO_CONFIG.lam:g}, lr {ORPO_CONFIG.lr:g}; KTO: {KTO_CONFIG.steps} x {KTO_CONFIG.batch_examples} "
                 f"examples, beta {KTO_CONFIG.beta:g}, lambda_D {KTO_CONFIG.lambda_d:g}, lambda_U "
                 f"{KTO_CONFIG.lambda_u:g}, lr {KTO_CONFIG.lr:g}; one thread; held-out evaluation with 4 samples per problem",
                 f"{'seed':>4} {'run':<5} {'pairs':>5} {'sampled':>24} {'greedy':>15} {'reasoned share':>15} "
                 f"{'reasoned right':>15} {'chosen logp':>13} {'train s':>7} {'ref logps':>9}"]
        for seed in SEEDS:
            pairs = chapter_pairs(base, seed)
            start = None
            for name, cfg in _runs(seed).items():
                torch.manual_seed(seed)
                _, h, evals = measured_run(base, pairs, cfg, start=start)
                start = evals[0]
                first, last = evals[0], evals[-1]
                path = "/".join(f"{100 * e['sampled_accuracy']:.0f}" for e in evals)
                lines.append(f"{seed:>4} {name:<5} {len(pairs):>5} {path:>24} "
                             f"{_pct(first['greedy_accuracy'])}->{_pct(last['greedy_accuracy'])} "
                             f"{_pct(first['reasoned_share'])}->{_pct(last['reasoned_share'])} "
                             f"{_pct(first['reasoned_accuracy'])}->{_pct(last['reasoned_accuracy'])} "
                             f"{first['chosen_logp']:5.2f}->{last['chosen_logp']:5.2f} {h['seconds'][0]:7.1f} "
                             f"{h['reference_logps'][0]:>9}")
                if "kl" in h:                                           # KTO: how often its reference point was above 0
                    positive = sum(z > 0 for z in h["kl"])
                    lines.append(f"{'':>10} KTO's z0: mean {sum(h['kl']) / len(h['kl']):.3f}, above 0 in {positive} of "
                                 f"{len(h['kl'])} steps")
        lines.append("sampled: held-out sampled accuracy (pass@1) at steps " +
                     "/".join(str(s) for s in range(0, CONFIG.steps + 1, CONFIG.eval_every)) +
                     "; chosen logp: mean log-prob of the training pairs' chosen responses, before -> after; "
                     "ref logps: reference log-probs held during training")
        return lines
