"""PPO-RLHF against the course's reward model (chapter 09), seeds 0–2: the chapter's run and one with a weak KL penalty.

For each seed and each β: a copy of the base model (actor), a critic initialised from the reward model, the
frozen base model as the reference, `PPOConfig`'s defaults otherwise (12 rollouts × 48 problems, 2 epochs ×
2 minibatches, lr 2e-4). Before and after: what the rules say of 4 samples per held-out problem (sampled and
greedy accuracy, format rate, reasoned share, the share of samples that reason and are wrong) and what the
reward model says of the same samples (mean score; mean score of the right and of the reasoned-but-wrong
ones); during training: the RM score and rule accuracy of the rollouts, the KL to the reference (k1 per
response), the diagnostics at the last rollout, and the training time (evaluation not counted).
"""

from __future__ import annotations

import copy
from dataclasses import replace

from llmcourse.checkpoint import load_base_model
from llmcourse.runtime import torch_threads
from llmcourse.evaluation import evaluate_with_rm
from llmcourse.ppo_rlhf import PPOConfig, make_critic, train_ppo
from llmcourse.reward_model import load_reward_model

SEEDS = (0, 1, 2)
WEAK_BETA = 0.05
"""β of the comparison run: a tenth of the chapter's."""


def measured_run(base, rm, cfg: PPOConfig) -> tuple[dict, dict]:
    """Train a fresh actor and critic with ``cfg``; returns (history, held-out metrics after training)."""
    actor, critic = copy.deepcopy(base), make_critic(rm)
    history = train_ppo(actor, critic, rm, cfg)
    return history, evaluate_with_rm(actor, rm)


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def run() -> list[str]:
    with torch_threads(1):
        base, rm = load_base_model(), load_reward_model()
        before = evaluate_with_rm(base, rm)
        cfg0 = PPOConfig()
        lines = [
            f"PPO-RLHF: {cfg0.rollouts} rollouts x {cfg0.prompts_per_rollout} problems, {cfg0.ppo_epochs} epochs x "
            f"{cfg0.minibatches} minibatches, lr {cfg0.lr:g}, critic from the reward model, one thread",
            f"base model, held out (4 samples per problem): sampled {_pct(before['sampled_accuracy'])}, greedy "
            f"{_pct(before['greedy_accuracy'])}, format {_pct(before['format_rate'])}, reasoned "
            f"{_pct(before['reasoned_share'])}, reasoned and wrong {_pct(before['reasoned_wrong_share'])}, "
            f"RM score {before['rm_score']:+.2f} (right {before['rm_score_right']:+.2f}, reasoned wrong "
            f"{before['rm_score_reasoned_wrong']:+.2f}, bare right {before['rm_score_bare_right']:+.2f})",
            "",
            f"{'beta':>5} {'seed':>4} {'RM roll':>13} {'acc roll':>15} {'KL':>5} {'maxKL':>5} | {'sampled':>7} {'greedy':>7} "
            f"{'format':>7} {'reasoned':>8} {'reas.wrong':>10} {'RM held':>7} {'RM right':>8} {'RM r.wrong':>10} | "
            f"{'apxKL':>6} {'clip':>5} {'EV':>5} {'ent':>5} {'len':>5} {'sec':>5}",
        ]
        summary: dict[float, list[dict]] = {}
        for beta in (cfg0.beta, WEAK_BETA):
            for seed in SEEDS:
                h, ev = measured_run(base, rm, replace(cfg0, beta=beta, seed=seed))
                summary.setdefault(beta, []).append(dict(ev, kl=h["kl"][-1], max_kl=max(h["kl"]), acc_first=h["accuracy"][0],
                                                         acc_last=h["accuracy"][-1], acc_max=max(h["accuracy"])))
                lines.append(
                    f"{beta:>5g} {seed:>4} {h['rm_score'][0]:+5.2f}->{h['rm_score'][-1]:+5.2f} "
                    f"{_pct(h['accuracy'][0])}->{_pct(h['accuracy'][-1])} {h['kl'][-1]:5.2f} {max(h['kl']):5.2f} | "
                    f"{_pct(ev['sampled_accuracy']):>7} {_pct(ev['greedy_accuracy']):>7} {_pct(ev['format_rate']):>7} "
                    f"{_pct(ev['reasoned_share']):>8} {_pct(ev['reasoned_wrong_share']):>10} {ev['rm_score']:+7.2f} "
                    f"{ev['rm_score_right']:+8.2f} {ev['rm_score_reasoned_wrong']:+10.2f} | "
                    f"{h['approx_kl'][-1]:6.4f} {h['clip_fraction'][-1]:5.3f} {h['explained_variance'][-1]:5.2f} "
                    f"{h['entropy'][-1]:5.3f} {h['response_length'][-1]:5.1f} {h['seconds'][0]:5.1f}")
        lines.append("")
        for beta, runs in summary.items():
            lifts = [r["sampled_accuracy"] - before["sampled_accuracy"] for r in runs]
            lines.append(
                f"beta {beta:g}: sampled accuracy lift {100 * min(lifts):+.1f} to {100 * max(lifts):+.1f} points; "
                f"held-out RM score {min(r['rm_score'] for r in runs):+.2f} to {max(r['rm_score'] for r in runs):+.2f} "
                f"(base {before['rm_score']:+.2f}); reasoned and wrong {_pct(min(r['reasoned_wrong_share'] for r in runs)).strip()}"
                f" to {_pct(max(r['reasoned_wrong_share'] for r in runs)).strip()}; final KL "
                f"{min(r['kl'] for r in runs):.2f} to {max(r['kl'] for r in runs):.2f} nats (largest during training "
                f"{max(r['max_kl'] for r in runs):.2f})")
        return lines
