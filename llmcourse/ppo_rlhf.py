"""PPO for language models (RLHF, chapter 09): per-token rewards, GAE over tokens, clipped losses, the loop.

Four models take part (InstructGPT, Ouyang et al. 2022; TRL's former ``PPOTrainer``, removed before TRL 1.16):

* the **actor** π_θ, the policy being trained (a copy of the base model);
* the **critic** V_φ, a value per token: here a `RewardModel` (body + scalar head) initialised from the
  reward model, as InstructGPT and TRL do, so that its first predictions already know what a score is;
* the **reward model** r, frozen, which scores each finished response once (chapter 07);
* the **reference** π_ref, a frozen copy of the base model, which the KL penalty keeps the actor near.

Everything is computed in the columns of `llmcourse.logprobs.token_logprobs`: column t holds
log π(token t+1 | tokens ≤ t), and the value of the state that chooses token t+1 is the critic's number at
position t. ``mask = target_mask(responses.response_mask)`` (B, T-1) is True on the response's tokens::

    ids        <|user|> 2+3 <|assistant|> <answer> 5 </answer> <|endoftext|> <|pad|>
    column t           0      1            2      3     4           5           6
    mask               0      0            1      1     1           1           0
    reward             0      0         −βk_2  −βk_3  −βk_4    −βk_5 + score    0

The per-token reward (InstructGPT eq. 2, TRL): −β · k_t at every response token, k_t = log π_old − log π_ref
(the k1 estimate on the sampled token), and the reward model's score added at the last response token. k1 is the
estimator that belongs in a reward: the policy gradient with these rewards is an unbiased estimate of the gradient
of the objective's −β KL(π ‖ π_ref). k3 = (r − 1) − log r, r = π_ref/π, has the same expectation (the KL), yet as a
reward it estimates the gradient of another quantity, KL(π ‖ π_ref) − KL(π_ref ‖ π) at each token: its (r − 1) part
contributes minus the gradient of the forward KL (`llmcourse.kl.expected_gradient` computes both exactly, with
``kl.PLACEMENTS["k1 in the reward"]`` and ``["k3 in the reward"]``).
GAE (γ = 1, λ) runs backwards over the response, with V = 0 after its last token (the episode ends there).
The losses are token-level means over the batch's response tokens: the clipped surrogate and the clipped
value loss of Schulman et al. (2017), as in chapter 03 (`llmcourse.cartpole_ppo`), with masks.

The loop (`train_ppo`) in stages: sample a rollout; score it (old log-probs, reference log-probs, values,
the reward model's score) without gradients; rewards and advantages; several epochs over minibatches.

Measured (``python -m llmcourse bench --skip-notebooks --only ppo_rlhf``, seeds 0–2, `PPOConfig`'s defaults:
12 rollouts × 48 problems, β 0.5, about 20 s on one idle thread): held-out sampled accuracy 33.7% → 73–78%, greedy
17% → 90–93%, the reward model's mean score −1.3 → +3.2, KL to the reference 2.1–2.7 nats per response. The reward
model cannot tell a wrong reasoned answer from a right one, and one sample in five is now exactly that (2% before).
With β 0.05 the score rises as high (+3.2 to +3.4) while accuracy ends at 30–57%: the policy games the reward model.
The critic explains a third of the returns' variance (``--only ppo_critic``): a prefix does not tell the score.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.evaluation import response_stats
from llmcourse.kl import k3
from llmcourse.logprobs import entropy_from_logits, logprobs_from_logits, masked_mean, target_mask, token_logprobs
from llmcourse.model import GPT
from llmcourse.policy_gradient import gae as gae_time_first
from llmcourse.reward_model import RewardModel, score_responses
from llmcourse.rule_rewards import rule_rewards
from llmcourse.run_log import RunLog
from llmcourse.sampling import Responses, sample_responses

# --------------------------------------------------------------------------- rewards and advantages


def last_response_column(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool mask -> (B,) long: the column of each row's last True entry (−1 for a row with none).

    >>> last_response_column(torch.tensor([[False, True, True, False], [True, False, False, False]]))
    tensor([2, 0])
    """
    columns = torch.arange(mask.size(1), device=mask.device).expand_as(mask)        # (B, T)
    return torch.where(mask, columns, torch.full_like(columns, -1)).max(dim=1).values


def token_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """Per-token rewards (B, T): −β (logp − ref_logp) on every response token, plus ``score`` on the last one.

    score (B,): the reward model's score of each response; logp, ref_logp (B, T): log-probs of the sampled
    tokens under the rollout's policy and under the reference; mask (B, T) bool: the response's tokens.
    Outside the mask the reward is 0. No gradient flows: rewards are data.

    The penalty is k1 on purpose: as a reward, k3 in its place would follow the gradient of another objective
    (the module docstring; `llmcourse.kl.expected_gradient`).

    >>> logp, ref = torch.tensor([[0.0, -1.0, -2.0, 0.0]]), torch.tensor([[0.0, -1.5, -1.0, 0.0]])
    >>> token_rewards(torch.tensor([3.0]), logp, ref, torch.tensor([[False, True, True, False]]), beta=0.1)
    tensor([[ 0.0000, -0.0500,  3.1000,  0.0000]])
    """
    kl = (logp - ref_logp).detach()                                                  # (B, T) k1 per token
    rewards = torch.where(mask, -beta * kl, torch.zeros_like(kl))                    # (B, T)
    last = last_response_column(mask)                                                # (B,)
    has = last >= 0
    rows = torch.arange(len(score), device=score.device)[has]
    rewards[rows, last[has]] += score.detach()[has].to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the response tokens: rewards, values, mask (B, T) -> (advantages, returns), each (B, T).

    δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γ λ A_{t+1}, backwards over each row's response, with
    V = 0 after the last response token (the response ends the episode); returns R_t = A_t + V_t.
    Both are 0 outside the mask. This is chapter 03's `llmcourse.policy_gradient.gae` (time first)
    run on the masked rows; γ = 1 as in TRL (a response is short and its reward arrives at its end).

    >>> r, v = torch.tensor([[0.0, 0.0, 1.0, 0.0]]), torch.tensor([[9.0, 0.5, 0.25, 9.0]])
    >>> m = torch.tensor([[False, True, True, False]])
    >>> gae(r, v, m, gamma=1.0, lam=1.0)           # A = R − V with R = 1 for both response tokens
    (tensor([[0.0000, 0.5000, 0.7500, 0.0000]]), tensor([[0., 1., 1., 0.]]))
    """
    zero = torch.zeros_like(rewards)
    r = torch.where(mask, rewards, zero).detach()                                    # (B, T)
    v = torch.where(mask, values, zero).detach()                                     # (B, T): V = 0 off the response
    dones = torch.zeros_like(r.T)                                                    # (T, B): masking ends episodes
    adv = gae_time_first(r.T, v.T, dones, torch.zeros_like(r[:, 0]), gamma, lam).T   # (B, T)
    adv = torch.where(mask, adv, zero)
    return adv, torch.where(mask, adv + v, zero)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the masked entries (population std); 0 outside the mask.

    >>> whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[True, True, False]]))
    tensor([[-1.,  1.,  0.]])
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return torch.where(mask, (x - mean) / (var.sqrt() + eps), torch.zeros_like(x))


# --------------------------------------------------------------------------- losses


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2) -> torch.Tensor:
    """Token-level clipped surrogate, a loss to minimise (scalar); inputs (B, T), mask (B, T) bool.

    ρ_t = exp(logp_t − old_logp_t); per token max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)), i.e. minus PPO's
    min of the two surrogates; then the mean over all response tokens of the batch (TRL's ``masked_mean``).
    Gradients flow to ``logp`` only.

    >>> policy_loss(torch.log(torch.tensor([[1.5, 0.5, 9.0]])), torch.zeros(1, 3),
    ...             torch.tensor([[1.0, -1.0, 5.0]]), torch.tensor([[True, True, False]]), 0.2)
    tensor(-0.2000)
    """
    ratio = torch.exp(logp - old_logp.detach())                                      # (B, T)
    adv = advantages.detach()
    unclipped = -adv * ratio                                                         # (B, T)
    clipped = -adv * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)                 # (B, T)
    return masked_mean(torch.max(unclipped, clipped), mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_eps: float = 0.2) -> torch.Tensor:
    """Clipped value loss ½ · masked mean of max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, ±ε).

    values (B, T) carry the critic's gradient; old_values (B, T) are the rollout's; returns (B, T) the targets.

    >>> value_loss(torch.tensor([[2.0, 7.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]),
    ...            torch.tensor([[True, False]]), clip_eps=0.5)
    tensor(0.5000)
    """
    old, target = old_values.detach(), returns.detach()
    v_clipped = old + torch.clamp(values - old, -clip_eps, clip_eps)                 # (B, T)
    per_token = torch.max((values - target) ** 2, (v_clipped - target) ** 2)         # (B, T)
    return 0.5 * masked_mean(per_token, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the masked entries (population variances); NaN when Var(R) = 0.

    1: the critic predicts the returns exactly; 0: no better than their mean; < 0: worse than that.

    >>> explained_variance(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 3.0, 0.0]]),
    ...                    torch.tensor([[True, True, False]]))     # Var(R − V) = 0.25, Var(R) = 1
    0.75
    """
    v, r = values[mask].double(), returns[mask].double()
    var_r = r.var(unbiased=False)
    return float("nan") if var_r == 0 else float(1 - (r - v).var(unbiased=False) / var_r)


def tokens_to_end(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool mask -> (B, T) long: how many response tokens follow each one (0 at the last; −1 off the mask).

    With ``explained_variance(values, returns, mask & (tokens_to_end(mask) == 0))`` the critic is judged at
    the responses' last tokens only, and so on for any distance from the end.

    >>> tokens_to_end(torch.tensor([[False, True, True, True, False], [True, True, False, False, False]]))
    tensor([[-1,  2,  1,  0, -1],
            [ 1,  0, -1, -1, -1]])
    """
    after = mask.long().flip(1).cumsum(1).flip(1) - 1                                # (B, T): response tokens from here on − 1
    return torch.where(mask, after, torch.full_like(after, -1))


# --------------------------------------------------------------------------- models


def make_critic(rm: RewardModel) -> RewardModel:
    """The critic: a trainable copy of the reward model (its body and head), read at every position."""
    critic = copy.deepcopy(rm)
    critic.requires_grad_(True)
    return critic


def make_reference(base: GPT) -> GPT:
    """The reference: a frozen copy of ``base`` in eval mode."""
    ref = copy.deepcopy(base).eval()
    ref.requires_grad_(False)
    return ref


def token_values(critic: RewardModel, ids: torch.Tensor) -> torch.Tensor:
    """(B, T) ids -> (B, T-1): the critic's value at positions 0…T-2, aligned with `token_logprobs`' columns."""
    return critic.values(ids[:, :-1])


# --------------------------------------------------------------------------- the loop


@dataclass
class PPOConfig:
    """PPO-RLHF on the task world (one rollout per update; defaults measured on one CPU thread)."""

    rollouts: int = 12
    """Rollouts (each followed by ``ppo_epochs`` passes over it)."""
    prompts_per_rollout: int = 48
    """Training problems per rollout; each is answered ``samples_per_prompt`` times."""
    samples_per_prompt: int = 1
    """Responses per problem (PPO needs no group: the critic is the baseline)."""
    ppo_epochs: int = 2
    """Passes over each rollout."""
    minibatches: int = 2
    """Minibatches per pass."""
    lr: float = 2e-4
    """AdamW learning rate of the actor."""
    critic_lr: float = 2e-4
    """AdamW learning rate of the critic."""
    beta: float = 0.5
    """KL coefficient β of the per-token reward −β (log π_old − log π_ref). Measured over seeds 0–2: at 0.5 sampled
    accuracy rises 39–44 points; at 0.05 the reward model's score rises as much but accuracy moves −3 to +24 points,
    42–69% of the samples reasoning and wrong (the policy games the reward model)."""
    gamma: float = 1.0
    """Discount over response tokens (1: the score at the end counts fully at every token)."""
    lam: float = 0.95
    """GAE's λ."""
    clip_eps: float = 0.2
    """ε of the clipped surrogate."""
    clip_eps_value: float = 0.2
    """ε of the clipped value loss (around the old values). Measured (``--only ppo_critic``, seeds 0–2): it binds on
    16% of the tokens, and without it, or with a 5× critic lr, the critic explains more of the returns (0.31–0.38 →
    up to 0.43–0.53) but the policy ends no better; ``math.inf`` turns it off."""
    vf_coef: float = 0.5
    """Weight of the value loss (the critic has its own parameters, so it only scales the critic's step)."""
    whiten_advantages: bool = True
    """Normalise the advantages over each rollout's response tokens (TRL does)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, actor and critic separately."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    max_new_tokens: int = 48
    """Token budget of a response."""
    eval_every: int = 0
    """Call ``on_eval`` every this many rollouts, before the first and after the last (0: never)."""
    seed: int = 0
    """Seed of the training problems, the sampling and the minibatches."""


LossFn = Callable[..., torch.Tensor]
HISTORY_KEYS = ("rm_score", "rule_reward", "accuracy", "format_rate", "reasoned_share", "kl", "non_score_reward",
                "approx_kl", "clip_fraction", "value_clip_fraction", "explained_variance", "entropy",
                "response_length", "policy_loss", "value_loss")


@torch.no_grad()
def score_rollout(actor: GPT, critic: RewardModel, ref: GPT, rm: RewardModel, r: Responses) -> dict[str, torch.Tensor]:
    """Stage 2 of a rollout, without gradients: old log-probs, reference log-probs, values (B, T-1), scores (B,)."""
    return {"old_logp": token_logprobs(actor, r.ids), "ref_logp": token_logprobs(ref, r.ids),
            "old_values": token_values(critic, r.ids), "score": score_responses(rm, r)}


def train_ppo(actor: GPT, critic: RewardModel, rm: RewardModel, cfg: PPOConfig, ref: GPT | None = None,
              policy_loss_fn: LossFn = policy_loss, value_loss_fn: LossFn = value_loss,
              rewards_fn: LossFn = token_rewards, gae_fn: Callable = gae,
              on_eval: Callable[[int, GPT], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    """Train ``actor`` and ``critic`` in place with PPO against the frozen reward model ``rm``.

    ``ref``: the frozen reference (default: a frozen copy of ``actor`` as it is now). The learner's own
    ``policy_loss_fn``, ``value_loss_fn``, ``rewards_fn`` and ``gae_fn`` can be passed in.
    Returns one entry per rollout: the mean RM score and rule reward, accuracy, format rate and reasoned
    share of the rollout's responses (by the rules), the KL to the reference (k1, summed over a response's
    tokens, averaged over responses), and over the updates of that rollout: the approximate KL between the
    rollout's policy and the policy before each step (k3 of the ratio ρ, (ρ − 1) − log ρ, CleanRL's ``approx_kl``;
    TRL's ``approxkl`` is ½ (log ρ)², the same to second order), the clip fraction, the critic's explained variance
    (before its updates), the entropy,
    the mean response length, the losses; and ``seconds`` (training time, ``on_eval`` not counted).
    """
    ref = make_reference(actor) if ref is None else ref
    rm.eval().requires_grad_(False)
    device = next(actor.parameters()).device
    problems = tw.sample_problems(cfg.rollouts * cfg.prompts_per_rollout, seed=20_000 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    mb_gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW([{"params": actor.parameters(), "lr": cfg.lr},
                             {"params": critic.parameters(), "lr": cfg.critic_lr}], weight_decay=0.0)
    log = RunLog(actor, on_eval if cfg.eval_every else None, keys=HISTORY_KEYS)

    for u in tqdm(range(cfg.rollouts), desc="PPO rollouts", disable=not progress):
        if cfg.eval_every and u % cfg.eval_every == 0:
            log.evaluate(u)
        batch = problems[u * cfg.prompts_per_rollout:(u + 1) * cfg.prompts_per_rollout]
        # Stage 1: sample responses from the actor
        actor.eval()
        r = sample_responses(actor, batch, cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, generator=gen)
        mask = target_mask(r.response_mask)                                          # (B, T-1)
        # Stage 2: old log-probs, reference log-probs, values and scores, no gradients
        s = score_rollout(actor, critic, ref, rm, r)
        # Stage 3: per-token rewards, advantages and returns
        rewards = rewards_fn(s["score"], s["old_logp"], s["ref_logp"], mask, cfg.beta)   # (B, T-1)
        advantages, returns = gae_fn(rewards, s["old_values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        kl_per_response = torch.where(mask, s["old_logp"] - s["ref_logp"], torch.zeros_like(rewards)).sum(1)
        texts, rows = r.texts, r.per_row(batch)
        log.add(rm_score=s["score"].mean().item(), rule_reward=rule_rewards(texts, rows).mean().item(),
                **response_stats(texts, rows), kl=kl_per_response.mean().item(),
                non_score_reward=(rewards.sum(1) - s["score"]).mean().item(),
                explained_variance=explained_variance(s["old_values"], returns, mask),
                response_length=r.response_lens.float().mean().item())
        # Stage 4: several epochs over minibatches of the rollout
        actor.train()
        critic.train()
        stats: dict[str, list[float]] = {k: [] for k in ("approx_kl", "clip_fraction", "value_clip_fraction",
                                                           "entropy", "policy_loss", "value_loss")}
        B = len(r)
        mb_size = max(1, B // cfg.minibatches)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=mb_gen).tolist()
            for lo in range(0, B - mb_size + 1, mb_size):
                i = torch.tensor(order[lo:lo + mb_size], device=device)
                ids, m = r.ids[i], mask[i]                                           # (b, T), (b, T-1)
                logits = actor(ids[:, :-1])                                          # (b, T-1, V)
                logp = logprobs_from_logits(logits, ids)                             # (b, T-1)
                values = token_values(critic, ids)                                   # (b, T-1)
                pl = policy_loss_fn(logp, s["old_logp"][i], advantages[i], m, cfg.clip_eps)
                vl = value_loss_fn(values, s["old_values"][i], returns[i], m, cfg.clip_eps_value)
                opt.zero_grad(set_to_none=True)
                (pl + cfg.vf_coef * vl).backward()
                torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    log_ratio = logp - s["old_logp"][i]
                    stats["approx_kl"].append(masked_mean(k3(s["old_logp"][i], logp), m).item())
                    stats["clip_fraction"].append(masked_mean(((log_ratio.exp() - 1).abs() > cfg.clip_eps).float(), m).item())
                    stats["value_clip_fraction"].append(
                        masked_mean(((values - s["old_values"][i]).abs() > cfg.clip_eps_value).float(), m).item())
                    stats["entropy"].append(masked_mean(entropy_from_logits(logits), m).item())
                stats["policy_loss"].append(pl.item())
                stats["value_loss"].append(vl.item())
        log.add(**{k: sum(v) / len(v) for k, v in stats.items()})
    log.evaluate(cfg.rollouts)
    actor.eval()
    critic.eval()
    return log.finish()


def memory_footprint(n_params: int, bytes_per_param: int = 2, trainable: bool = True) -> int:
    """Bytes to hold one model: its weights, plus, if trained with AdamW, a gradient, the two float32 moments and,
    for weights narrower than float32, a float32 master copy.

    Mixed-precision training (16-bit weights and gradients) keeps the float32 master weights that the optimizer
    updates and the 16-bit copy is cast from, and the two float32 moments: 2 + 2 + 4 + 8 = 16 bytes per trained
    parameter (the accounting of the ZeRO paper, Rajbhandari et al. 2020), 2 per frozen one. In float32 the
    weights are their own master copy: 4 + 4 + 8 = 16 bytes too, 4 per frozen one.

    >>> memory_footprint(7_000_000_000) / 1e9, memory_footprint(7_000_000_000, trainable=False) / 1e9
    (112.0, 14.0)
    >>> memory_footprint(1_000, bytes_per_param=4), memory_footprint(1_000, bytes_per_param=4, trainable=False)
    (16000, 4000)
    """
    if not trainable:
        return n_params * bytes_per_param
    master = 4 if bytes_per_param < 4 else 0                                         # float32 master weights
    return n_params * (2 * bytes_per_param + master + 8)


# --------------------------------------------------------------------------- measured


KL_FRONTIER_PATH = Path(__file__).parent / "data" / "ppo_kl_frontier.json"
"""The held-out trajectories of `PPOConfig`'s run and the weak-β run, seeds 0–2 (written by the benchmark)."""


def kl_frontier() -> dict:
    """The measured trajectories (``python -m llmcourse bench --skip-notebooks --only ppo_rlhf``, seeds 0–2).

    ``runs``: one entry per β and seed, with ``points``, one per held-out evaluation (every ``eval_every``
    rollouts and after the last): ``rollout``, ``kl`` (exact KL to the reference, nats per response),
    ``sampled_accuracy`` (by the rules), ``greedy_accuracy``, ``rm_score`` (the reward model's mean score of
    the same samples) and ``reasoned_wrong_share``; and per training rollout ``entropy``, ``rollout_kl``,
    ``rollout_accuracy`` and ``rollout_rm_score``. ``base``: the base model's sampled accuracy and RM score;
    ``config``: the recipe (`PPOConfig`) they were measured with; ``weak_beta``: the second β.
    """
    return json.loads(KL_FRONTIER_PATH.read_text(encoding="utf-8"))
