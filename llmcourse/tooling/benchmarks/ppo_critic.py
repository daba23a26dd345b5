"""Why chapter 09's critic explains little of the returns: its settings varied, seeds 0–2, and what a prefix can predict.

The critic (a trainable copy of the reward model, `ppo_rlhf.make_critic`) is judged by its explained variance on
each rollout before it trains on it (`ppo_rlhf.explained_variance`, GAE returns), averaged over the 12 rollouts
and over the last 4. Each variant changes the critic's settings of `PPOConfig` (its learning rate, the value clip
around the old values, a fresh head) and keeps everything else; held-out sampled and greedy accuracy after
training (`evaluation.evaluate`, 4 samples per problem) tell whether the change costs the chapter's result.

Then what limits any critic here, on the trained policy of the recipe (seed 0): how much of the score's variance
lies between prompts (a critic that read the prompt perfectly could explain at most that share at a response's
first token) and how much within a prompt (8 samples of each of 48 problems); the trained critic's explained
variance by distance to the end of the response (Monte-Carlo returns of a fresh rollout); and a fresh critic
trained for 40 rollouts on the frozen trained policy, with the recipe's critic settings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate
from llmcourse.logprobs import target_mask
from llmcourse.ppo_rlhf import (PPOConfig, explained_variance, gae, make_critic, make_reference, score_rollout,
                                token_rewards, token_values, tokens_to_end, train_ppo, value_loss)
from llmcourse.reward_model import load_reward_model
from llmcourse.runtime import torch_threads
from llmcourse.sampling import sample_responses

SEEDS = (0, 1, 2)
VARIANTS = {
    "critic lr 2e-4, value clip 0.2": dict(critic_lr=2e-4, clip_eps_value=0.2),
    "critic lr 2e-4, no value clip": dict(critic_lr=2e-4, clip_eps_value=math.inf),
    "critic lr 1e-3, value clip 0.2": dict(critic_lr=1e-3, clip_eps_value=0.2),
    "critic lr 1e-3, no value clip": dict(critic_lr=1e-3, clip_eps_value=math.inf),
    "critic lr 2e-4, value clip 0.2, fresh head": dict(critic_lr=2e-4, clip_eps_value=0.2),
}
"""Each variant: the critic settings it gives `PPOConfig` (the rest is the recipe's)."""
FIXED_POLICY_ROLLOUTS = 40
"""Rollouts of the frozen trained policy that the fresh critic of the last measurement trains on."""
DIAGNOSTIC_PROBLEMS = 48
"""Problems of the fresh rollout on which the trained critic is judged."""
SAMPLES_PER_PROBLEM = 8
"""Samples of each of those problems, to split the score's variance between and within problems."""


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _rollout(actor, critic, ref, rm, problems, n, gen, cfg):
    """One rollout scored as `train_ppo` scores it: responses, mask, scores, GAE returns and Monte-Carlo returns."""
    r = sample_responses(actor, problems, n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         generator=gen)
    mask = target_mask(r.response_mask)                                              # (B, T-1)
    s = score_rollout(actor, critic, ref, rm, r)
    rewards = token_rewards(s["score"], s["old_logp"], s["ref_logp"], mask, cfg.beta)
    _, returns = gae(rewards, s["old_values"], mask, cfg.gamma, cfg.lam)
    _, mc_returns = gae(rewards, s["old_values"], mask, cfg.gamma, 1.0)
    return r, mask, s, returns, mc_returns


def _what_limits_the_critic(base, rm, cfg: PPOConfig) -> list[str]:
    actor, critic = copy.deepcopy(base), make_critic(rm)
    train_ppo(actor, critic, rm, cfg)
    ref, gen = make_reference(base), torch.Generator().manual_seed(123)
    problems = tw.sample_problems(DIAGNOSTIC_PROBLEMS, seed=777)
    r, mask, s, _, mc = _rollout(actor, critic, ref, rm, problems, SAMPLES_PER_PROBLEM, gen, cfg)
    scores = s["score"].view(len(problems), SAMPLES_PER_PROBLEM)                     # (48, 8)
    within, total = scores.var(dim=1).mean().item(), scores.flatten().var().item()
    share = 1 - within / total if total > 0 else float("nan")
    lines = [f"trained policy (seed {cfg.seed}), {len(problems)} problems x {SAMPLES_PER_PROBLEM} samples: variance of "
             f"the RM score {total:.2f}, of which {within:.2f} within a problem: at most {share:.2f} of it "
             f"can be explained from the prompt alone"]
    to_end = tokens_to_end(mask)                                                     # (B, T-1): 0 at the last token
    parts = []
    for lo, hi in ((0, 0), (1, 3), (4, 9), (10, 20), (21, 10_000)):
        m = mask & (to_end >= lo) & (to_end <= hi)
        if int(m.sum()) >= 20:
            parts.append(f"{lo}-{hi if hi < 10_000 else ''} tokens: {explained_variance(s['old_values'], mc, m):+.2f}")
    lines.append("the trained critic's explained variance of the Monte-Carlo returns of a fresh rollout, by tokens "
                 f"before the end: all {explained_variance(s['old_values'], mc, mask):+.2f}; " + "; ".join(parts))
    fresh = make_critic(rm)
    opt = torch.optim.AdamW(fresh.parameters(), lr=cfg.critic_lr, weight_decay=0.0)
    train_problems = tw.sample_problems(FIXED_POLICY_ROLLOUTS * cfg.prompts_per_rollout, seed=888)
    evs = []
    for u in range(FIXED_POLICY_ROLLOUTS):
        batch = train_problems[u * cfg.prompts_per_rollout:(u + 1) * cfg.prompts_per_rollout]
        rr, m2, s2, ret2, _ = _rollout(actor, fresh, ref, rm, batch, 1, gen, cfg)
        evs.append(explained_variance(s2["old_values"], ret2, m2))
        mb = max(1, len(rr) // cfg.minibatches)
        for _ in range(cfg.ppo_epochs):
            for lo in range(0, len(rr) - mb + 1, mb):
                i = slice(lo, lo + mb)
                loss = value_loss(token_values(fresh, rr.ids[i]), s2["old_values"][i], ret2[i], m2[i], cfg.clip_eps_value)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(fresh.parameters(), cfg.max_grad_norm)
                opt.step()
    fresh_mc = explained_variance(score_rollout(actor, fresh, ref, rm, r)["old_values"], mc, mask)
    lines.append(f"a fresh critic trained on {FIXED_POLICY_ROLLOUTS} rollouts of the frozen trained policy "
                 f"({FIXED_POLICY_ROLLOUTS * cfg.ppo_epochs * cfg.minibatches} steps at lr {cfg.critic_lr:g}): explained "
                 f"variance on its rollouts " + " ".join(f"{x:+.2f}" for x in evs[::5]) + f" (every 5th), mean of the last "
                 f"10 {_mean(evs[-10:]):+.2f}; on the fresh rollout above {fresh_mc:+.2f}")
    return lines


def run() -> list[str]:
    with torch_threads(1):
        base, rm = load_base_model(), load_reward_model()
        cfg0 = PPOConfig()
        lines = [f"PPO-RLHF with PPOConfig's recipe (critic lr {cfg0.critic_lr:g}, value clip {cfg0.clip_eps_value:g}) "
                 f"but the critic's settings below; seeds {', '.join(map(str, SEEDS))}; one thread",
                 f"{'variant':<44} {'EV mean (per seed)':>22} {'EV last 4':>18} {'v.clip':>6} {'sampled':>20} "
                 f"{'greedy':>20} {'KL end':>16}"]
        for name, settings in VARIANTS.items():
            rows = []
            for seed in SEEDS:
                cfg = replace(cfg0, seed=seed, **settings)
                actor, critic = copy.deepcopy(base), make_critic(rm)
                if "fresh head" in name:
                    torch.manual_seed(seed)
                    critic.head.reset_parameters()
                h = train_ppo(actor, critic, rm, cfg)
                ev = evaluate(actor)
                rows.append(dict(ev_mean=_mean(h["explained_variance"]), ev_last=_mean(h["explained_variance"][-4:]),
                                 vclip=_mean(h["value_clip_fraction"]), sampled=ev["sampled_accuracy"],
                                 greedy=ev["greedy_accuracy"], kl=h["kl"][-1]))

            def cell(key, fmt):
                return " ".join(fmt.format(r[key]) for r in rows)
            lines.append(f"{name:<44} {cell('ev_mean', '{:+.2f}'):>22} {cell('ev_last', '{:+.2f}'):>18} "
                         f"{_mean([r['vclip'] for r in rows]):6.3f} {cell('sampled', '{:.3f}'):>20} "
                         f"{cell('greedy', '{:.3f}'):>20} {cell('kl', '{:.2f}'):>16}")
        lines.append("EV: explained variance of the GAE returns before the critic trains on the rollout (mean over the 12 "
                     "rollouts; over the last 4); v.clip: share of tokens whose value left the clip range; sampled, greedy: "
                     "held-out accuracy after training; KL: nats per response at the last rollout")
        lines += _what_limits_the_critic(base, rm, replace(cfg0, seed=0))
        return lines
