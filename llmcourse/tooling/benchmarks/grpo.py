"""The base model and a plain GRPO loop: greedy/sampled accuracy, then sampled accuracy after 60 updates (3 seeds).

The loop is `llmcourse.grpo.train_grpo` with `llmcourse.grpo.PLAIN`, the simplest group-relative policy gradient:
for each update, 16 training problems × 8 sampled responses (temperature 1), the rule reward, advantages
``(r − mean of the group) / (std of the group + eps)``, one AdamW step at lr 1e-4 on the clipped surrogate with
μ = 1 (the ratio is 1, so its gradient is −Â ∇log π averaged over each response's tokens, then over responses);
no KL penalty. It measures what the base model offers RL: the reasoned style it already has and rarely uses
(chapter 05), made the usual one in about a minute.
"""

from __future__ import annotations

from dataclasses import replace

from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate
from llmcourse.grpo import PLAIN, train_grpo
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        ev = evaluate(base)
        lines = [
            "base model on the 256 held-out problems (4 samples per problem at temperature 1):",
            f"  greedy accuracy {_pct(ev['greedy_accuracy'])}, sampled accuracy (pass@1) {_pct(ev['sampled_accuracy'])}, "
            f"pass@4 {_pct(ev['pass_at_k'])}",
            f"  sampled format rate {_pct(ev['format_rate'])}, reasoned share {_pct(ev['reasoned_share'])}; "
            f"right when reasoning {_pct(ev['reasoned_accuracy'])}, otherwise {_pct(ev['bare_accuracy'])}",
            "  sampled accuracy by digits " + ", ".join(f"{k}: {_pct(v).strip()}" for k, v in ev["accuracy_by_digits"].items())
            + "; by carries " + ", ".join(f"{k}: {_pct(v).strip()}" for k, v in ev["accuracy_by_carries"].items()),
            "",
            f"plain GRPO: {PLAIN.updates} updates x {PLAIN.prompts_per_update} prompts x "
            f"{PLAIN.samples_per_prompt} samples, lr {PLAIN.lr:g}, no KL, one thread",
            f"{'seed':>4} {'sampled before':>14} {'sampled after':>13} {'lift':>7} {'greedy after':>12} "
            f"{'format after':>12} {'seconds':>8}",
        ]
        lifts = []
        for seed in SEEDS:
            model = load_base_model()
            h = train_grpo(model, replace(PLAIN, seed=seed))
            after = evaluate(model)
            lift = after["sampled_accuracy"] - ev["sampled_accuracy"]
            lifts.append(lift)
            lines.append(f"{seed:>4} {_pct(ev['sampled_accuracy']):>14} {_pct(after['sampled_accuracy']):>13} "
                         f"{100 * lift:+6.1f} {_pct(after['greedy_accuracy']):>12} {_pct(after['format_rate']):>12} "
                         f"{h['seconds'][0]:8.1f}")
        lines.append(f"lift of sampled accuracy: mean {100 * sum(lifts) / len(lifts):+.1f} points, "
                     f"min {100 * min(lifts):+.1f}, max {100 * max(lifts):+.1f} over seeds {list(SEEDS)}")
        return lines
