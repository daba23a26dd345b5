"""PPO-RLHF against the course's reward model (chapter 09), seeds 0–2: the chapter's run and one with a weak KL penalty.

For each seed and each β: a copy of the base model (actor), a critic initialised from the reward model, the
frozen base model as the reference, `PPOConfig`'s defaults otherwise (12 rollouts × 48 problems, 2 epochs ×
2 minibatches). Every `EVAL_EVERY` rollouts and after the last (`train_ppo`'s ``on_eval``, its time not counted
in the training time), on the held-out problems: what the rules say of 4 samples per problem (sampled accuracy,
the "gold" reward of Gao et al. 2023), the reward model's mean score of the same samples (the proxy), the share
of samples that reason and are wrong, and the exact KL to the reference summed over the model's own sampled
responses (`evaluation.kl_to_model`); so the gold and proxy rewards can be read against the KL, for both βs.
After training, the full held-out report (`evaluation.evaluate_with_rm`: greedy accuracy, format rate, the RM's
score by kind of sample), the training rollouts' KL (k1 per response) and the diagnostics at the last rollout.
A full run (3 seeds) also writes the trajectories to `llmcourse/data/ppo_kl_frontier.json`, which chapter 09 plots.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate_with_rm, kl_to_model
from llmcourse.ppo_rlhf import KL_FRONTIER_PATH, PPOConfig, make_critic, make_reference, train_ppo
from llmcourse.reward_model import load_reward_model
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
WEAK_BETA = 0.05
"""β of the comparison run: a tenth of the chapter's."""
EVAL_EVERY = 2
"""Held-out evaluation every this many rollouts, and after the last."""
FRONTIER_FILE: Path = KL_FRONTIER_PATH
"""Where a full run (seeds 0–2) writes the trajectories that chapter 09 plots."""


def measured_run(base, rm, cfg: PPOConfig) -> tuple[dict, dict, list[dict]]:
    """Train a fresh actor and critic with ``cfg``; returns (history, held-out report after training, trajectory).

    The trajectory holds one point per evaluation: the rollout, the exact KL to the reference (nats per response),
    sampled and greedy accuracy, the RM's mean score and the share of reasoned-and-wrong samples."""
    actor, critic, ref = copy.deepcopy(base), make_critic(rm), make_reference(base)
    trajectory: list[dict] = []
    last: dict = {}

    def on_eval(step: int, model) -> None:
        ev = evaluate_with_rm(model, rm)
        last.clear()
        last.update(ev)
        trajectory.append(dict(rollout=step, kl=kl_to_model(model, ref), sampled_accuracy=ev["sampled_accuracy"],
                               greedy_accuracy=ev["greedy_accuracy"], rm_score=ev["rm_score"],
                               reasoned_wrong_share=ev["reasoned_wrong_share"]))
    history = train_ppo(actor, critic, rm, replace(cfg, eval_every=EVAL_EVERY), ref=ref, on_eval=on_eval)
    return history, dict(last), trajectory


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def run() -> list[str]:
    with torch_threads(1):
        base, rm = load_base_model(), load_reward_model()
        before = evaluate_with_rm(base, rm)
        cfg0 = PPOConfig()
        lines = [
            f"PPO-RLHF: {cfg0.rollouts} rollouts x {cfg0.prompts_per_rollout} problems, {cfg0.ppo_epochs} epochs x "
            f"{cfg0.minibatches} minibatches, lr {cfg0.lr:g}, critic lr {cfg0.critic_lr:g}, value clip "
            f"{cfg0.clip_eps_value:g}, critic from the reward model, one thread",
            f"base model, held out (4 samples per problem): sampled {_pct(before['sampled_accuracy'])}, greedy "
            f"{_pct(before['greedy_accuracy'])}, format {_pct(before['format_rate'])}, reasoned "
            f"{_pct(before['reasoned_share'])}, reasoned and wrong {_pct(before['reasoned_wrong_share'])}, "
            f"RM score {before['rm_score']:+.2f} (right {before['rm_score_right']:+.2f}, reasoned wrong "
            f"{before['rm_score_reasoned_wrong']:+.2f}, bare right {before['rm_score_bare_right']:+.2f})",
            "",
            f"{'beta':>5} {'seed':>4} {'RM roll':>13} {'acc roll':>15} {'KL':>5} {'maxKL':>5} | {'sampled':>7} {'greedy':>7} "
            f"{'format':>7} {'reasoned':>8} {'reas.wrong':>10} {'RM held':>7} {'RM right':>8} {'RM r.wrong':>10} | "
            f"{'apxKL':>6} {'clip':>5} {'EV':>5} {'EVmean':>6} {'ent':>5} {'len':>5} {'sec':>5}",
        ]
        summary: dict[float, list[dict]] = {}
        frontier: list[dict] = []
        for beta in (cfg0.beta, WEAK_BETA):
            for seed in SEEDS:
                h, ev, trajectory = measured_run(base, rm, replace(cfg0, beta=beta, seed=seed))
                frontier.append(dict(beta=beta, seed=seed, points=trajectory, entropy=h["entropy"],
                                     rollout_kl=h["kl"], rollout_accuracy=h["accuracy"], rollout_rm_score=h["rm_score"]))
                summary.setdefault(beta, []).append(dict(ev, kl=h["kl"][-1], max_kl=max(h["kl"]), trajectory=trajectory,
                                                         ev_mean=sum(h["explained_variance"]) / len(h["explained_variance"])))
                lines.append(
                    f"{beta:>5g} {seed:>4} {h['rm_score'][0]:+5.2f}->{h['rm_score'][-1]:+5.2f} "
                    f"{_pct(h['accuracy'][0])}->{_pct(h['accuracy'][-1])} {h['kl'][-1]:5.2f} {max(h['kl']):5.2f} | "
                    f"{_pct(ev['sampled_accuracy']):>7} {_pct(ev['greedy_accuracy']):>7} {_pct(ev['format_rate']):>7} "
                    f"{_pct(ev['reasoned_share']):>8} {_pct(ev['reasoned_wrong_share']):>10} {ev['rm_score']:+7.2f} "
                    f"{ev['rm_score_right']:+8.2f} {ev['rm_score_reasoned_wrong']:+10.2f} | "
                    f"{h['approx_kl'][-1]:6.4f} {h['clip_fraction'][-1]:5.3f} {h['explained_variance'][-1]:5.2f} "
                    f"{summary[beta][-1]['ev_mean']:6.2f} {h['entropy'][-1]:5.3f} {h['response_length'][-1]:5.1f} "
                    f"{h['seconds'][0]:5.1f}")
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
        lines.append("")
        lines.append(f"along training (held out, every {EVAL_EVERY} rollouts): exact KL to the reference (nats per "
                     "response) / sampled accuracy / RM score")
        for beta, runs in summary.items():
            for seed, r in zip(SEEDS, runs):
                lines.append(f"beta {beta:<5g} seed {seed}: " + "  ".join(
                    f"{p['kl']:.2f}/{100 * p['sampled_accuracy']:.0f}%/{p['rm_score']:+.2f}" for p in r["trajectory"]))
        if tuple(SEEDS) == (0, 1, 2):                       # a full run: the data chapter 09 plots
            FRONTIER_FILE.write_text(json.dumps(dict(config=asdict(cfg0), weak_beta=WEAK_BETA, eval_every=EVAL_EVERY,
                                                     base=dict(sampled_accuracy=before["sampled_accuracy"],
                                                               rm_score=before["rm_score"]),
                                                     runs=frontier), indent=1) + "\n")
            lines.append(f"wrote {FRONTIER_FILE.name}")
        return lines
