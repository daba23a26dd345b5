"""GRPO: group-relative policy optimisation with rule rewards, a clipped token-level surrogate and a KL penalty.

GRPO (Shao et al. 2024, "DeepSeekMath", §4.1, eq. 3) is PPO without a critic. For each prompt q it samples a
*group* of G responses o_1 … o_G from the policy as it was before the update (π_old), scores them with rules
(`llmcourse.rule_rewards.rule_rewards`), and uses each response's reward relative to its group as the advantage of
every one of its tokens (`group_advantages`). The loss to minimise is, per token t of response i,

    ℓ_{i,t} = −min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) Â_i) + β · k3_{i,t},
    ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | q, o_{i,<t}),

with k3 Schulman's estimator of KL(π_θ ‖ π_ref) per token (`llmcourse.kl.k3`), π_ref the model before training.
k3's *value* is an unbiased, non-negative estimate of that KL, but in a loss only its gradient acts, and on average
that is the gradient of the forward KL(π_ref ‖ π_θ), not of the reverse KL the objective names (`llmcourse.kl`).
``GRPOConfig.kl_estimator`` and ``kl_in`` choose where the KL acts: k3 in the loss (the recipe, DeepSeekMath, and
TRL with ``use_bias_correction_kl=False``), k2 in the loss or k3 × π_θ/π_old in the loss (DeepSeek-V3.2, TRL 1.16's
default ``use_bias_correction_kl=True``), both with the
reverse KL's gradient per position, or k1 in the reward (`kl_penalized_rewards`, as chapter 09's PPO; the
response's summed k1 subtracted from its reward before the group advantages).
How the per-token losses become one number is where the variants differ (`aggregate`):

    "sequence"  mean over each response's tokens, then over responses   (GRPO as published; TRL ``loss_type="grpo"``)
    "token"     sum over all tokens of the batch / number of tokens     (DAPO, Yu et al. 2025; TRL "bnpo"/"dapo")
    "dr_grpo"   sum over all tokens / (B · max response length)         (Dr. GRPO, Liu et al. 2025; TRL "dr_grpo")

and so does the advantage: divided by the group's std (GRPO) or not (Dr. GRPO, ``GRPOConfig.scale_rewards``).

`train_grpo` runs the loop on a `llmcourse.model.GPT`: sample, score, advantages, old log-probs, then
``epochs`` (μ) gradient steps on the batch. The reference π_ref is a frozen copy of the model made at the start
(0.85 M parameters: the copy costs 3.4 MB); with LoRA (chapter 06) the policy with its adapters disabled would
be the reference without a copy, at the price of a second forward pass through the policy. GRPO needs no value
model: where PPO (chapter 09) trains a critic as large as the policy to predict each token's return, GRPO's
baseline is the group's mean reward, paid for with G samples per prompt.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, replace
from typing import Callable

import torch
from tqdm.auto import tqdm

from llmcourse import kl
from llmcourse import taskworld as tw
from llmcourse.evaluation import response_stats
from llmcourse.logprobs import (entropy_from_logits, logprobs_from_logits, masked_mean, masked_sum, target_mask,
                                token_logprobs)
from llmcourse.model import GPT
from llmcourse.rule_rewards import rule_rewards
from llmcourse.run_log import RunLog
from llmcourse.sampling import sample_responses

AGGREGATIONS = ("sequence", "token", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3", "k3_ratio")
KL_PLACES = ("loss", "reward")


def group_advantages(rewards: torch.Tensor, n_samples: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(B,) rewards of prompt-major groups of ``n_samples`` -> (B,) group-relative advantages.

    ``scale=True`` (GRPO): divide by the group's sample standard deviation (n − 1 in the
    denominator, as ``torch.std`` and TRL) plus ``eps``. ``scale=False`` (Dr. GRPO): only
    subtract the mean. A group whose rewards are all equal carries no learning signal: its
    advantages are exactly 0 (not NaN, not rounding noise blown up by the division).

    One prompt, four samples, one right (1) and three wrong (0): mean 0.25, std 0.5:

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), n_samples=4, eps=0.0)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.1, 1.1]), n_samples=2, scale=False)
    tensor([ 0.5000, -0.5000,  0.0000,  0.0000,  0.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one value per row, shape (B,), got {tuple(rewards.shape)}")
    if n_samples < 2 or rewards.numel() % n_samples:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of n_samples={n_samples} (≥ 2)")
    groups = rewards.view(-1, n_samples)                                # (n_prompts, n_samples)
    advantages = groups - groups.mean(dim=1, keepdim=True)              # (n_prompts, n_samples)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    all_equal = (groups == groups[:, :1]).all(dim=1, keepdim=True)      # (n_prompts, 1)
    advantages = torch.where(all_equal, torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1)                                       # (B,)


def rloo_advantages(rewards: torch.Tensor, n_samples: int) -> torch.Tensor:
    """(B,) rewards of prompt-major groups -> (B,) RLOO advantages: each reward minus the mean of the *others*.

    REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, TRL's ``RLOOTrainer``): the baseline of a
    sample does not contain the sample itself, so it is independent of it and the gradient estimate unbiased.
    r_i − (Σ_j r_j − r_i)/(G − 1) = G/(G − 1) · (r_i − mean): GRPO's centring, rescaled, and no division by the
    std. A group whose rewards are all equal gets exactly 0. One right answer of four:

    >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.1, 1.1]), n_samples=2)
    tensor([ 1., -1.,  0.,  0.,  0.,  0.])
    >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), n_samples=4)
    tensor([ 1.0000, -0.3333, -0.3333, -0.3333])
    """
    if rewards.dim() != 1 or n_samples < 2 or rewards.numel() % n_samples:
        raise ValueError(f"need (B,) rewards in groups of n_samples={n_samples} (≥ 2), got {tuple(rewards.shape)}")
    groups = rewards.view(-1, n_samples)                                # (n_prompts, G)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (n_samples - 1)   # (n_prompts, G): mean of the others
    advantages = groups - others                                        # (n_prompts, G)
    all_equal = (groups == groups[:, :1]).all(dim=1, keepdim=True)      # (n_prompts, 1)
    return torch.where(all_equal, torch.zeros_like(advantages), advantages).reshape(-1)   # (B,)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float = 0.2, eps_high: float | None = None) -> torch.Tensor:
    """GRPO's (and PPO's) clipped surrogate as a per-token loss: (B, T) log-probs, (B,) advantages -> (B, T).

    ``−min(ρ A, clip(ρ, 1 − eps_low, 1 + eps_high) A)`` with ρ = exp(logp − old_logp); ``old_logp`` is a
    constant (detached), ``eps_high`` defaults to ``eps_low`` (DAPO's "clip-higher" raises it). Each row's
    advantage applies to all of its tokens. No mask here: `aggregate` keeps the response tokens.

    A ratio of 1.5 with A = +1 is clipped to 1.2; with A = −1 it is not (the min keeps the worse −1.5); a ratio
    of 0.5 with A = −1 is clipped to 0.8:

    >>> logp = torch.log(torch.tensor([[1.5, 1.0], [1.5, 0.5]]))
    >>> clipped_surrogate(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    tensor([[-1.2000, -1.0000],
            [ 1.5000,  0.8000]])
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp.detach())                             # (B, T)
    adv = advantages.unsqueeze(-1)                                          # (B, 1): one advantage per response
    unclipped = ratio * adv                                                 # (B, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv           # (B, T)
    return -torch.min(unclipped, clipped)                                   # (B, T)


def sequence_clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                               eps_low: float = 3e-4, eps_high: float = 4e-4, *, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's clipped surrogate (Zheng et al. 2025, eq. 5–7), one ratio per *response*, written per token: -> (B, T).

    s_i = exp(mean_t (logp − old_logp)) over response i's ``mask``-ed tokens, the geometric mean of its tokens'
    ratios; the loss of response i is −min(s_i A_i, clip(s_i, 1 − eps_low, 1 + eps_high) A_i), clipped (or not) as
    a whole. Per token (GSPO-token): s_{i,t} = sg[s_i] · π_θ(y_t)/sg[π_θ(y_t)], equal to s_i in value, with
    gradient s_i ∇log π_θ(y_t); averaged per sequence (``aggregate(…, "sequence")``) this is GSPO's loss and its
    gradient. The defaults are the paper's clip range, far narrower than a token ratio's 0.2, since s_i is a mean of
    log-ratios. TRL: ``importance_sampling_level="sequence"``. Two responses, log-ratios (0.2, 0) and (0.4, ·):

    >>> logp, m = torch.tensor([[0.2, 0.0], [0.4, 0.0]]), torch.tensor([[True, True], [True, False]])
    >>> sequence_clipped_surrogate(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), 0.2, 0.2, mask=m)
    tensor([[-1.1052, -1.1052],
            [ 1.4918,  1.4918]])
    """
    log_ratio = logp - old_logp.detach()                                    # (B, T)
    seq_log_ratio = masked_mean(log_ratio, mask, dim=1).unsqueeze(-1)       # (B, 1): log s_i
    ratio = torch.exp(seq_log_ratio.detach() + logp - logp.detach())        # (B, T): s_i in value, ∇ = s_i ∇log π
    adv = advantages.unsqueeze(-1)                                          # (B, 1)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv           # (B, T)
    return -torch.min(ratio * adv, clipped)                                 # (B, T)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "sequence",
              max_len: int | None = None) -> torch.Tensor:
    """Per-token losses (B, T) and a mask (B, T) of the tokens that count -> one scalar loss.

    ``"sequence"``: each response's mean over its own tokens, then the mean over responses (a response with no
    token counts 0). ``"token"``: the sum over all kept tokens of the batch divided by their number.
    ``"dr_grpo"``: the sum over all kept tokens divided by ``B · max_len`` (a constant). Two responses, of 1
    and 3 tokens:

    >>> x = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    >>> m = torch.tensor([[True, False, False], [True, True, True]])
    >>> aggregate(x, m, "sequence"), aggregate(x, m, "token"), aggregate(x, m, "dr_grpo", max_len=4)
    (tensor(2.5000), tensor(1.7500), tensor(0.8750))
    """
    if mode == "sequence":
        return masked_mean(per_token, mask, dim=1).mean()                   # (B,) -> scalar
    if mode == "token":
        return masked_mean(per_token, mask)                                 # scalar
    if mode == "dr_grpo":
        if max_len is None:
            raise ValueError("mode 'dr_grpo' divides by B · max_len: give max_len (the response token budget)")
        return masked_sum(per_token, mask) / (per_token.size(0) * max_len)  # scalar
    raise ValueError(f"unknown mode {mode!r}; use one of {AGGREGATIONS}")


def clip_fraction(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  eps_low: float = 0.2, eps_high: float | None = None, ratio_level: str = "token") -> float:
    """Share of the kept tokens whose gradient the clip removes (ratio past 1 + eps_high with A > 0, or below
    1 − eps_low with A < 0), as TRL logs it (``clip_ratio/region_mean``). With ``ratio_level="sequence"`` (GSPO)
    the ratio is each response's, s_i, and a clipped response counts all its tokens.

    >>> logp = torch.log(torch.tensor([[1.5, 1.0], [1.5, 0.5]]))
    >>> clip_fraction(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), torch.ones(2, 2, dtype=torch.bool))
    0.5
    """
    eps_high = eps_low if eps_high is None else eps_high
    log_ratio = (logp - old_logp).detach()                                  # (B, T)
    if ratio_level == "sequence":
        log_ratio = masked_mean(log_ratio, mask, dim=1).unsqueeze(-1).expand_as(log_ratio)   # (B, T): log s_i
    ratio = torch.exp(log_ratio)                                            # (B, T)
    adv = advantages.unsqueeze(-1)                                          # (B, 1)
    clipped = ((ratio > 1 + eps_high) & (adv > 0)) | ((ratio < 1 - eps_low) & (adv < 0))   # (B, T)
    return masked_mean(clipped.float(), mask).item()


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float = 0.0, eps_low: float = 0.2, eps_high: float | None = None,
              mode: str = "sequence", max_len: int | None = None,
              surrogate_fn: Callable[..., torch.Tensor] = clipped_surrogate,
              kl_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = kl.k3,
              aggregate_fn: Callable[..., torch.Tensor] = aggregate, kl_ratio: bool = False) -> torch.Tensor:
    """The whole GRPO loss (DeepSeekMath eq. 3 and its variants): (B, T) log-probs, (B,) advantages -> scalar.

    ``clipped_surrogate + beta · kl_fn(logp, ref_logp)`` per token (k3 by default), aggregated by ``mode`` over
    the ``mask``-ed tokens; with ``kl_ratio`` the KL term is multiplied by π_θ/π_old = exp(logp − old_logp) of
    its token (`llmcourse.kl.importance_weighted`). ``ref_logp`` may be None when ``beta == 0`` (then no
    reference is needed). `train_grpo` trains with this function; a learner's own surrogate, KL estimator or
    aggregation can replace the package's.
    """
    per_token = surrogate_fn(logp, old_logp, advantages, eps_low, eps_high)        # (B, T)
    if beta:
        kl_term = kl_fn(logp, ref_logp.detach())                                   # (B, T)
        if kl_ratio:
            kl_term = kl.importance_weighted(kl_term, logp, old_logp)              # (B, T): × π_θ/π_old
        per_token = per_token + beta * kl_term                                     # (B, T)
    return aggregate_fn(per_token, mask, mode, max_len)


def kl_penalized_rewards(rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         beta: float, kl_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = kl.k1
                         ) -> torch.Tensor:
    """The KL in the reward: (B,) rewards − β · Σ_t kl_fn(logp, ref_logp) over each response's ``mask``-ed tokens.

    ``logp`` are the log-probs of the policy that sampled the responses, so with k1 (the default) the sum is an
    unbiased estimate of the sequence-level KL(π ‖ π_ref), and its policy gradient, through the advantages, the
    reverse KL's (the issue TRL #4967 asks for; chapter 09's PPO puts it in the reward token by token). A
    constant: no gradient flows through it. Two responses of 2 and 1 tokens, k1 = (0.5, 0.25) and (−0.5):

    >>> logp, ref_logp = torch.tensor([[-1.0, -1.0], [-2.0, 0.0]]), torch.tensor([[-1.5, -1.25], [-1.5, 0.0]])
    >>> kl_penalized_rewards(torch.tensor([1.0, 0.0]), logp, ref_logp, torch.tensor([[1, 1], [1, 0]]).bool(), 0.4)
    tensor([0.7000, 0.2000])
    """
    per_response = masked_sum(kl_fn(logp, ref_logp), mask, dim=1).detach()        # (B,)
    return rewards - beta * per_response                                           # (B,)


# --------------------------------------------------------------------------- training


@dataclass
class GRPOConfig:
    """One GRPO run on the task world's training problems; the defaults are chapter 10's recipe."""

    updates: int = 40
    """Sampled batches; each gets ``epochs`` optimizer steps."""
    prompts_per_update: int = 16
    """Training problems per batch."""
    samples_per_prompt: int = 8
    """G: responses per problem, the group whose rewards are compared."""
    epochs: int = 1
    """μ: optimizer steps on each sampled batch; with 1 the ratio is 1 and the clip never acts."""
    lr: float = 2e-4
    """AdamW learning rate (constant, no weight decay)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    max_new_tokens: int = 48
    """Token budget of a response; also Dr. GRPO's constant divisor."""
    beta: float = 0.04
    """Weight of the KL to the reference (DeepSeekMath's 0.04; DeepSeek-R1 used 0.001, TRL's default is 0); 0 drops
    the term (and, with ``log_kl=False``, the reference's forward pass)."""
    kl_estimator: str = "k3"
    """Which estimate of the KL the penalty uses: "k1", "k2", "k3" (`llmcourse.kl`) or "k3_ratio", k3 times the
    token's ratio π_θ/π_old (DeepSeek-V3.2, TRL 1.16's default ``use_bias_correction_kl=True``; in the loss only)."""
    kl_in: str = "loss"
    """Where the penalty acts: "loss", β · estimate per token in the loss (GRPO; on average k3's gradient is the
    forward KL's, k2's and k3_ratio's the reverse KL's), or "reward", β · the response's summed estimate
    subtracted from its reward before the group advantages (unbiased for the reverse KL with k1)."""
    eps_low: float = 0.2
    """Clip range below: a ratio under 1 − eps_low earns nothing more for a negative advantage."""
    eps_high: float = 0.2
    """Clip range above (DAPO's clip-higher sets it larger than eps_low)."""
    scale_rewards: bool = True
    """Divide the advantages by the group's std (GRPO); False only centres them (Dr. GRPO)."""
    advantage: str = "group"
    """The baseline: "group", the group's mean (`group_advantages`), or "rloo", the mean of the *other* samples
    (`rloo_advantages`, which divides by no std: it needs ``scale_rewards=False``)."""
    ratio_level: str = "token"
    """The importance ratio and its clip: "token" (GRPO, PPO) or "sequence", one ratio per response
    (GSPO, `sequence_clipped_surrogate`; with μ = 1 the ratio is 1 and the two give the same gradient)."""
    aggregation: str = "sequence"
    """How per-token losses become one: "sequence", "token" (DAPO) or "dr_grpo" (see `aggregate`)."""
    format_weight: float = 0.1
    """Reward for the reasoned format, added to 1 for a right answer (`rule_rewards`)."""
    log_kl: bool = True
    """Score each batch with the reference to log the KL even when ``beta == 0`` (one extra forward pass)."""
    seed: int = 0
    """Seed of the training problems and of the sampling."""


RECIPE = GRPOConfig()
"""Chapter 10's run: 40 updates × 16 problems × 8 samples, lr 2e-4, β 0.04 (k3 in the loss), ε 0.2, ÷ std, sequence
mean, μ 1."""

PLAIN = GRPOConfig(updates=60, lr=1e-4, beta=0.0, log_kl=False)
"""The plainest group-relative policy gradient: no KL, and with μ = 1 the ratio is 1, so the clipped surrogate's
gradient is −Â ∇log π (REINFORCE with the group's baseline). 60 updates at lr 1e-4: what the base model offers
RL (chapter 05, README)."""

SurrogateFn = Callable[..., torch.Tensor]


def train_grpo(model: GPT, cfg: GRPOConfig, surrogate_fn: SurrogateFn = clipped_surrogate,
               aggregate_fn: Callable[..., torch.Tensor] = aggregate,
               kl_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = kl.k3,
               advantage_fn: Callable[..., torch.Tensor] = group_advantages,
               on_eval: Callable[[int, GPT], None] | None = None, eval_every: int = 0,
               progress: bool = False) -> dict[str, list[float]]:
    """Train ``model`` in place with GRPO; the learner's own pieces can replace the package's.

    ``advantage_fn(rewards, n_samples, scale)``, ``surrogate_fn(logp, old_logp, advantages, eps_low, eps_high)``,
    ``aggregate_fn(per_token, mask, mode, max_len)`` and ``kl_fn(logp, ref_logp)`` have the signatures of
    `group_advantages`, `clipped_surrogate`, `aggregate` and `llmcourse.kl.k3`; ``kl_fn`` is the k3 that logs the
    KL and, when ``cfg.kl_estimator`` is "k3" or "k3_ratio", the penalty's (k1 and k2 are `llmcourse.kl`'s).
    ``on_eval(update, model)`` runs before the first update, every ``eval_every`` updates and after the last (its
    time is not counted).

    Returns one value per update: ``reward`` (mean rule reward), ``accuracy`` (share right), ``format_rate``,
    ``reasoned`` (share with ``<think>``), ``length`` (mean response tokens, EOS included), ``kl`` (mean k3 to the
    reference over response tokens, NaN when not logged), ``entropy`` (the policy's mean next-token entropy over
    the response tokens, in nats, before the batch's first step: `llmcourse.logprobs.entropy_from_logits`),
    ``clip_fraction`` (over all μ steps), ``zero_groups`` (share of groups whose rule rewards are all equal),
    ``loss``; and ``seconds`` (training time).
    """
    if cfg.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {cfg.aggregation!r}; use one of {AGGREGATIONS}")
    if cfg.kl_estimator not in KL_ESTIMATORS or cfg.kl_in not in KL_PLACES:
        raise ValueError(f"KL estimator {cfg.kl_estimator!r} in the {cfg.kl_in!r}: use one of {KL_ESTIMATORS} "
                         f"in one of {KL_PLACES}")
    if cfg.kl_estimator == "k3_ratio" and cfg.kl_in == "reward":
        raise ValueError("k3_ratio belongs in the loss: in the reward the ratio is a constant 1")
    if cfg.advantage not in ("group", "rloo") or cfg.ratio_level not in ("token", "sequence"):
        raise ValueError(f"advantage {cfg.advantage!r} ('group' or 'rloo'), ratio_level {cfg.ratio_level!r} "
                         "('token' or 'sequence')")
    if cfg.advantage == "rloo" and cfg.scale_rewards:
        raise ValueError("RLOO's advantages are not divided by the std: set scale_rewards=False")
    penalty_fn = kl_fn if cfg.kl_estimator in ("k3", "k3_ratio") else kl.ESTIMATORS[cfg.kl_estimator]
    in_reward = cfg.kl_in == "reward" and cfg.beta != 0
    loss_beta = 0.0 if cfg.kl_in == "reward" else cfg.beta
    device = next(model.parameters()).device
    problems = tw.sample_problems(cfg.updates * cfg.prompts_per_update, seed=10_000 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    reference = None
    if cfg.beta or cfg.log_kl:
        reference = copy.deepcopy(model).eval().requires_grad_(False)      # π_ref: the model before training
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    G = cfg.samples_per_prompt
    log = RunLog(model, on_eval)

    for u in tqdm(range(cfg.updates), desc="GRPO updates", disable=not progress):
        if u == 0 or (eval_every and u % eval_every == 0):
            log.evaluate(u)
        batch = problems[u * cfg.prompts_per_update:(u + 1) * cfg.prompts_per_update]
        # Stage 1: sample a group of G responses per problem from π_old (the model as it is now)
        model.eval()
        r = sample_responses(model, batch, G, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, generator=gen)
        mask = target_mask(r.response_mask)                                               # (B, T-1)
        # Stage 2: old and reference log-probs, constants
        with torch.no_grad():
            old_logp = token_logprobs(model, r.ids) if cfg.epochs > 1 else None            # (B, T-1)
            ref_logp = token_logprobs(reference, r.ids) if reference is not None else None  # (B, T-1)
            sampler_logp = old_logp if old_logp is not None or not in_reward else token_logprobs(model, r.ids)
        # Stage 3: rule rewards (with the KL when it goes in the reward), advantages relative to each group
        rewards = rule_rewards(r, batch, format_weight=cfg.format_weight)                  # (B,)
        train_rewards = rewards                                                            # (B,)
        if in_reward:
            train_rewards = kl_penalized_rewards(rewards, sampler_logp, ref_logp, mask, cfg.beta, penalty_fn)
        if cfg.advantage == "rloo":
            advantages = rloo_advantages(train_rewards, G)                                 # (B,)
        else:
            advantages = advantage_fn(train_rewards, G, scale=cfg.scale_rewards)           # (B,)
        step_surrogate = surrogate_fn
        if cfg.ratio_level == "sequence":
            step_surrogate = functools.partial(sequence_clipped_surrogate, mask=mask)
        # Stage 4: μ gradient steps on the batch
        model.train()
        clipped, kl_value = [], float("nan")
        for epoch in range(cfg.epochs):
            logits = model(r.ids[:, :-1])                                                  # (B, T-1, V)
            logp = logprobs_from_logits(logits, r.ids)                                     # (B, T-1)
            old = logp.detach() if old_logp is None else old_logp                          # μ = 1: the ratio is 1
            if epoch == 0:
                entropy = masked_mean(entropy_from_logits(logits.detach()), mask).item()
                if ref_logp is not None:
                    kl_value = masked_mean(kl_fn(logp.detach(), ref_logp), mask).item()
            loss = grpo_loss(logp, old, ref_logp, advantages, mask, loss_beta, cfg.eps_low, cfg.eps_high,
                             cfg.aggregation, cfg.max_new_tokens, step_surrogate, penalty_fn, aggregate_fn,
                             kl_ratio=cfg.kl_estimator == "k3_ratio")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clipped.append(clip_fraction(logp, old, advantages, mask, cfg.eps_low, cfg.eps_high, cfg.ratio_level))
        # Stage 5: what an expert watches
        stats = response_stats(r.texts, r.per_row(batch))
        groups = rewards.view(-1, G)                                                       # (n_prompts, G)
        log.add(reward=rewards.mean().item(), accuracy=stats["accuracy"], format_rate=stats["format_rate"],
                reasoned=stats["reasoned_share"], length=r.response_lens.float().mean().item(), kl=kl_value,
                entropy=entropy,
                clip_fraction=sum(clipped) / len(clipped),
                zero_groups=(groups == groups[:, :1]).all(dim=1).float().mean().item(), loss=loss.item())
    log.evaluate(cfg.updates)
    model.eval()
    return log.finish()


def grpo_run(cfg: GRPOConfig, seed: int = 0, device: str | torch.device = "cpu") -> tuple[GPT, dict[str, list[float]]]:
    """A fresh copy of the shipped base model trained with ``cfg`` for ``seed`` (torch's global seed set too):
    the model and `train_grpo`'s history. What the benchmarks run for each configuration and seed."""
    from llmcourse.checkpoint import load_base_model                   # the shipped model (chapter 05)
    torch.manual_seed(seed)
    model = load_base_model(device)
    history = train_grpo(model, replace(cfg, seed=seed))
    return model, history


def main() -> None:
    """Rebuild ``llmcourse/data/grpo_model.pt``, chapter 10's recipe for seed 0 (one thread, deterministic): the
    teacher of chapter 12, shipped so that a notebook can start from it in a second."""
    from llmcourse.checkpoint import GRPO_MODEL_PATH, file_sha256, save_checkpoint
    from llmcourse.evaluation import evaluate
    from llmcourse.runtime import torch_threads
    with torch_threads(1):
        model, history = grpo_run(RECIPE, seed=0)
        metrics = {k: v for k, v in evaluate(model).items() if isinstance(v, (int, float, dict))}
    save_checkpoint(model, GRPO_MODEL_PATH, metrics=metrics)
    print(f"trained in {history['seconds'][0]:.0f} s; held-out sampled accuracy {metrics['sampled_accuracy']:.3f}, "
          f"greedy {metrics['greedy_accuracy']:.3f}")
    print(f"wrote {GRPO_MODEL_PATH} ({GRPO_MODEL_PATH.stat().st_size / 1e6:.2f} MB), sha256 {file_sha256(GRPO_MODEL_PATH)}")


if __name__ == "__main__":
    main()
