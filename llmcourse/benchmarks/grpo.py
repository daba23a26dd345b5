"""The base model and a plain GRPO loop: greedy/sampled accuracy, then sampled accuracy after 60 updates (3 seeds).

The loop is the simplest group-relative policy gradient: for each update, 16 training problems
× 8 sampled responses (temperature 1), the rule reward (`llmcourse.rewards.rule_rewards`), advantages
``(r − mean of the group) / (std of the group + eps)`` (`llmcourse.rewards.group_advantages`), the policy-gradient loss
``−A · log π(token)`` averaged over each response's tokens, then over responses; no KL penalty,
no clipping, one AdamW step per batch. It measures what the base model offers RL: the reasoned
style it already has and rarely uses (chapter 05), made the usual one in about a minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate
from llmcourse.logprobs import masked_mean, target_mask, token_logprobs
from llmcourse.model import GPT
from llmcourse.notebook import torch_threads
from llmcourse.rewards import group_advantages, rule_rewards
from llmcourse.sampling import sample_responses

SEEDS = (0, 1, 2)


@dataclass
class PlainGRPOConfig:
    """The plain group-relative loop of the benchmark."""

    updates: int = 60
    """Optimizer steps, one per sampled batch."""
    prompts_per_update: int = 16
    """Training problems per batch."""
    samples_per_prompt: int = 8
    """Responses per problem: the group whose mean and std normalise the rewards."""
    lr: float = 1e-4
    """AdamW learning rate (constant, no weight decay)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    eps: float = 1e-4
    """Added to the group std; a group whose rewards are all equal gets advantage 0."""
    seed: int = 0
    """Seed of the training problems and of the sampling."""


def train_plain_grpo(model: GPT, cfg: PlainGRPOConfig) -> dict[str, list[float]]:
    """Run ``cfg.updates`` updates on ``model`` in place; returns the mean reward per update and seconds."""
    problems = tw.sample_problems(cfg.updates * cfg.prompts_per_update, seed=10_000 + cfg.seed)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    history: dict[str, list[float]] = {"reward": []}
    start = time.perf_counter()
    for u in range(cfg.updates):
        batch = problems[u * cfg.prompts_per_update:(u + 1) * cfg.prompts_per_update]
        # Stage 1: sample a group of responses per problem
        model.eval()
        r = sample_responses(model, batch, cfg.samples_per_prompt, temperature=cfg.temperature, generator=gen)
        # Stage 2: score them with the rules and normalise within each group
        rewards = rule_rewards(r, batch)                                                  # (B,)
        adv = group_advantages(rewards, cfg.samples_per_prompt, eps=cfg.eps).view(-1, 1)  # (B, 1)
        # Stage 3: policy gradient on the response tokens, one step
        model.train()
        logp = token_logprobs(model, r.ids)                                               # (B, T-1)
        per_response = masked_mean(-adv * logp, target_mask(r.response_mask), dim=1)      # (B,)
        loss = per_response.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["reward"].append(rewards.mean().item())
    model.eval()
    history["seconds"] = [time.perf_counter() - start]
    return history


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
            f"plain GRPO: {PlainGRPOConfig().updates} updates x {PlainGRPOConfig().prompts_per_update} prompts x "
            f"{PlainGRPOConfig().samples_per_prompt} samples, lr {PlainGRPOConfig().lr:g}, no KL, one thread",
            f"{'seed':>4} {'sampled before':>14} {'sampled after':>13} {'lift':>7} {'greedy after':>12} "
            f"{'format after':>12} {'seconds':>8}",
        ]
        lifts = []
        for seed in SEEDS:
            model = load_base_model()
            h = train_plain_grpo(model, PlainGRPOConfig(seed=seed))
            after = evaluate(model)
            lift = after["sampled_accuracy"] - ev["sampled_accuracy"]
            lifts.append(lift)
            lines.append(f"{seed:>4} {_pct(ev['sampled_accuracy']):>14} {_pct(after['sampled_accuracy']):>13} "
                         f"{100 * lift:+6.1f} {_pct(after['greedy_accuracy']):>12} {_pct(after['format_rate']):>12} "
                         f"{h['seconds'][0]:8.1f}")
        lines.append(f"lift of sampled accuracy: mean {100 * sum(lifts) / len(lifts):+.1f} points, "
                     f"min {100 * min(lifts):+.1f}, max {100 * max(lifts):+.1f} over seeds {list(SEEDS)}")
        return lines
