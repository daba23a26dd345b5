"""Direct preference optimisation (DPO), its variants IPO, SimPO, RPO, ORPO and KTO, and their training loops.

DPO (Rafailov et al. 2023) trains the policy π on preference pairs (x, y_w, y_l), y_w preferred,
against a frozen reference π_ref, with no reward model and no sampling (eq. 7)::

    L_DPO = −E log σ( β log π(y_w|x)/π_ref(y_w|x) − β log π(y_l|x)/π_ref(y_l|x) )

β log π(y|x)/π_ref(y|x) is the policy's *implicit reward* of a response; the loss is the
Bradley–Terry loss of chapter 07 on those rewards. Everything works on *sequence* log-probs,
log π(y|x) = Σ_t log π(y_t | x, y_<t) over the response tokens only (`sequence_logprob`).

The variants change the function of the log-ratio margin
h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)):

- IPO (Azar et al. 2023): (h − 1/(2β))², a squared loss with a finite target, so the margin stops growing;
- SimPO (Meng et al. 2024): no reference; length-normalised log-probs and a target margin γ,
  −log σ(β/|y_w| log π(y_w) − β/|y_l| log π(y_l) − γ);
- RPO (Pang et al. 2024): DPO plus α times the negative log-likelihood of the chosen responses
  (per token), which keeps the chosen responses likely while the margin grows.

Two more change what the data or the model must be:

- ORPO (Hong et al. 2024): no reference at all; the SFT loss on the chosen responses plus λ times
  −log σ of the log *odds* ratio of the chosen to the rejected response, odds(y|x) = P/(1 − P) with
  P = exp(log π(y|x)/|y|) the length-normalised likelihood;
- KTO (Ethayarajh et al. 2024): no pairs; each response is labelled desirable or undesirable alone,
  and its log-ratio to the reference is pushed above (or below) a reference point z0, a detached batch
  estimate of KL(π ‖ π_ref) from mismatched prompt–response rows.

The losses take sequence log-probs (B,) and return a scalar (the mean over pairs, or examples); the
reference log-probs are constants of the objective (detached inside), whatever the caller passes.

`train_dpo` is the offline loop: the pairs are fixed, the reference is the model before training,
so its log-probs are computed once, under ``torch.no_grad()``, before the first step (TRL's
``precompute_ref_log_probs``): one forward pass per pair instead of one per pair per step, and no
second copy of the model held during training. `train_orpo` has no reference pass at all;
`train_kto` trains on the pairs' responses unpaired (chosen: desirable, rejected: undesirable) and
precomputes the reference's log-probs of its examples and of each step's mismatched rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.evaluation import evaluate
from llmcourse.logprobs import logprobs_from_logits, response_logprobs, sequence_logprobs, target_mask
from llmcourse.model import GPT
from llmcourse.preferences import PreferencePairs, sample_pairs
from llmcourse.run_log import RunLog
from llmcourse.sampling import Responses, pack_responses, prompt_ids

# --------------------------------------------------------------------------- sequence log-probs


def sequence_logprob(logits: torch.Tensor, ids: torch.Tensor, response_mask: torch.Tensor,
                     average: bool = False) -> torch.Tensor:
    """log π(response | prompt) of each row: (B, T, V) logits of ``model(ids)``, (B, T) ids and mask -> (B,).

    ``logits[:, t]`` predicts ``ids[:, t + 1]``; only tokens where ``response_mask`` is True count.
    ``average=True`` divides by the number of response tokens (a per-token mean, as SimPO uses).

    >>> logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))   # (1, 3, 2)
    >>> ids, mask = torch.tensor([[0, 1, 0]]), torch.tensor([[False, True, True]])
    >>> sequence_logprob(logits, ids, mask).exp()                                  # 0.5 · 0.9
    tensor([0.4500])
    """
    token_logp = logprobs_from_logits(logits[:, :-1], ids)                # (B, T-1): position t predicts t+1
    return sequence_logprobs(token_logp, target_mask(response_mask), average)   # (B,)


# --------------------------------------------------------------------------- losses


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Rafailov et al. (2023), eq. 7: mean over pairs of −log σ(β · ((π_w − ref_w) − (π_l − ref_l))).

    Inputs (B,) sequence log-probs; the reference ones are detached. One pair, β = 0.5:
    policy 1 nat more likely on y_w than the reference, 1 nat less on y_l -> −log σ(1) = 0.3133.

    >>> dpo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    tensor(0.3133)
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps.detach()         # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps.detach()   # (B,)
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Azar et al. (2023), eq. 17: mean over pairs of (h − 1/(2β))², h the log-ratio margin.

    Inputs: (B,) log-probs of the whole response, SUMMED over its tokens, as `train_dpo` feeds its ``loss_fn`` (the
    same inputs as `dpo_loss`). TRL's IPO (``DPOTrainer``, ``loss_type="ipo"``) divides each response's log-ratio
    by its number of tokens first: it is this function fed per-token MEAN log-probs (policy and reference alike),
    a different loss for the same β (tests/test_oracle_trl.py). The loss is 0 at h = 1/(2β) and grows again beyond
    it: the margin has a target, not ∞.

    >>> ipo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    tensor(1.)
    """
    h = (policy_chosen_logps - ref_chosen_logps.detach()) - (policy_rejected_logps - ref_rejected_logps.detach())
    return ((h - 1 / (2 * beta)) ** 2).mean()


def simpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               chosen_lens: torch.Tensor, rejected_lens: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Meng et al. (2024), eq. 6: mean of −log σ(β/|y_w| · log π(y_w) − β/|y_l| · log π(y_l) − γ).

    Inputs: (B,) summed log-probs and (B,) response lengths in tokens. No reference model.

    >>> simpo_loss(torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([2]), torch.tensor([3]), beta=2.0, gamma=1.0)
    tensor(0.3133)
    """
    chosen = policy_chosen_logps / chosen_lens                            # (B,) average log-prob per token
    rejected = policy_rejected_logps / rejected_lens                      # (B,)
    return -F.logsigmoid(beta * (chosen - rejected) - gamma).mean()


def chosen_nll(policy_chosen_logps: torch.Tensor, chosen_lens: torch.Tensor) -> torch.Tensor:
    """RPO's SFT term: mean over pairs of the chosen responses' negative log-likelihood per token, −log π(y_w|x)/|y_w|.

    Inputs (B,) summed log-probs and (B,) lengths in tokens -> scalar.

    >>> chosen_nll(torch.tensor([-3.0, -10.0]), torch.tensor([3, 5]))   # (1 + 2) / 2
    tensor(1.5000)
    """
    return (-policy_chosen_logps / chosen_lens).mean()


def rpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, chosen_lens: torch.Tensor,
             beta: float, alpha: float, loss_fn: Callable[..., torch.Tensor] = dpo_loss,
             nll_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = chosen_nll) -> torch.Tensor:
    """DPO plus α · the chosen responses' negative log-likelihood per token (Pang et al. 2024, eq. 1).

    With α = 0 this is `dpo_loss` (the NLL is then not computed). `train_dpo` trains with this function;
    ``loss_fn`` (`dpo_loss`'s signature) and ``nll_fn`` (`chosen_nll`'s) can be a learner's own.

    >>> rpo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0]),
    ...          torch.tensor([4]), beta=0.5, alpha=1.0)                     # 0.3133 + 4/4
    tensor(1.3133)
    """
    loss = loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    if alpha:
        loss = loss + alpha * nll_fn(policy_chosen_logps, chosen_lens)
    return loss


def implicit_rewards(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                     ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                     beta: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """DPO's implicit rewards β log π/π_ref of the chosen and rejected responses, (B,) each, detached,
    and the preference accuracy: the share of pairs whose chosen reward is strictly higher (a tie counts as wrong).

    >>> implicit_rewards(torch.tensor([-4.0, -5.0]), torch.tensor([-6.0, -5.0]),
    ...                  torch.tensor([-5.0, -5.0]), torch.tensor([-5.0, -5.0]), beta=0.5)
    (tensor([0.5000, 0.0000]), tensor([-0.5000,  0.0000]), 0.5)
    """
    chosen = (beta * (policy_chosen_logps - ref_chosen_logps)).detach()         # (B,)
    rejected = (beta * (policy_rejected_logps - ref_rejected_logps)).detach()   # (B,)
    return chosen, rejected, (chosen > rejected).float().mean().item()


def log_odds(avg_logps: torch.Tensor) -> torch.Tensor:
    """log odds(y|x) = log P − log(1 − P) of each response, from its mean log-prob per token, log P: (B,) -> (B,).

    log(1 − P) is computed as log(−expm1(log P)): exact where P is tiny (expm1 -> −1, log -> 0) and where P is
    close to 1 (expm1 keeps the small difference that 1 − exp(log P) would round away). Infinite at P = 1.

    >>> log_odds(torch.log(torch.tensor([0.5, 0.2])))                  # odds 1 and 1/4
    tensor([ 0.0000, -1.3863])
    """
    return avg_logps - torch.log(-torch.expm1(avg_logps))


def orpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              chosen_lens: torch.Tensor, rejected_lens: torch.Tensor, lam: float) -> torch.Tensor:
    """Hong et al. (2024), eq. 6–7: L_SFT + λ · L_OR, averaged over pairs. No reference model.

    Inputs: (B,) summed log-probs and (B,) response lengths. P(y|x) = exp(log π(y|x)/|y|) is the
    length-normalised likelihood, odds(y|x) = P/(1 − P) (`log_odds`), L_OR = −log σ(log odds(y_w) − log odds(y_l)),
    and L_SFT = −log π(y_w|x)/|y_w| (`chosen_nll`). One pair with P(y_w) = 1/2 over 2 tokens, P(y_l) = 1/5 over 1,
    λ = 0.5: odds 1 and 1/4, −log σ(log 4) = log 1.25, so 0.6931 + 0.5 · 0.2231:

    >>> orpo_loss(torch.log(torch.tensor([0.25])), torch.log(torch.tensor([0.2])), torch.tensor([2]), torch.tensor([1]),
    ...           lam=0.5)
    tensor(0.8047)
    """
    chosen_avg = policy_chosen_logps / chosen_lens                        # (B,) log P(y_w|x), per token
    rejected_avg = policy_rejected_logps / rejected_lens                  # (B,)
    log_odds_ratio = log_odds(chosen_avg) - log_odds(rejected_avg)        # (B,)
    return chosen_nll(policy_chosen_logps, chosen_lens) - lam * F.logsigmoid(log_odds_ratio).mean()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor, beta: float,
             lambda_d: float, lambda_u: float) -> torch.Tensor:
    """Ethayarajh et al. (2024), eq. 8: mean over the batch's examples of λ_y − v(x, y). Unpaired examples.

    ``policy_logps``, ``ref_logps`` (B,) sequence log-probs of each example's response; ``desirable`` (B,) bool;
    ``policy_kl_logps``, ``ref_kl_logps`` (B,) those of mismatched rows (prompt i with another example's response).
    r = log π(y|x) − log π_ref(y|x); the reference point z0 = max(0, mean of the mismatched rows' log-ratios) is
    a batch estimate of KL(π ‖ π_ref), detached (TRL's ``kto_loss``). A desirable example loses
    λ_D (1 − σ(β (r − z0))), an undesirable one λ_U (1 − σ(β (z0 − r))). Two examples, r = 1 (desirable) and
    r = −1 (undesirable), z0 = (1 + 0)/2, β = 1, λ_D = 1, λ_U = 2: (1 − σ(0.5) + 2 (1 − σ(1.5)))/2:

    >>> kto_loss(torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.0]), torch.tensor([True, False]),
    ...          torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -12.0]), beta=1.0, lambda_d=1.0, lambda_u=2.0)
    tensor(0.3712)
    """
    z0 = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()    # scalar: the reference point
    logratios = policy_logps - ref_logps.detach()                          # (B,)
    desirable_loss = lambda_d * (1 - torch.sigmoid(beta * (logratios - z0)))     # (B,)
    undesirable_loss = lambda_u * (1 - torch.sigmoid(beta * (z0 - logratios)))   # (B,)
    return torch.where(desirable, desirable_loss, undesirable_loss).mean()


# --------------------------------------------------------------------------- training


@dataclass
class DPOConfig:
    """One offline DPO run on fixed preference pairs; the defaults are chapter 08's settings."""

    steps: int = 40
    """Optimizer steps."""
    batch_pairs: int = 32
    """Pairs per step (each step scores 2 · batch_pairs responses)."""
    beta: float = 0.1
    """DPO's β: the scale of the implicit reward (larger: stay closer to the reference)."""
    lr: float = 1e-4
    """AdamW learning rate (constant, no weight decay)."""
    rpo_alpha: float = 0.0
    """Weight of the chosen responses' per-token NLL (RPO); 0 is plain DPO."""
    eval_every: int = 0
    """Call ``on_eval`` every this many steps (and before the first); 0: never."""
    seed: int = 0
    """Seed of the order in which pairs are drawn."""


RPO_ALPHA = 1.0
"""Chapter 08's weight of the SFT term in its RPO run (its plain DPO run: 0)."""


@dataclass
class ORPOConfig:
    """One ORPO run on fixed preference pairs; the defaults are chapter 08's ORPO recipe: DPO's budget (steps,
    pairs per step, learning rate) and the paper's λ."""

    steps: int = 40
    """Optimizer steps."""
    batch_pairs: int = 32
    """Pairs per step (each step scores 2 · batch_pairs responses)."""
    lam: float = 0.1
    """λ, the weight of the odds-ratio term against the SFT term (Hong et al. 2024; TRL's ``ORPOConfig.beta``)."""
    lr: float = 1e-4
    """AdamW learning rate (constant, no weight decay)."""
    eval_every: int = 0
    """Call ``on_eval`` every this many steps (and before the first); 0: never."""
    seed: int = 0
    """Seed of the order in which pairs are drawn."""


@dataclass
class KTOConfig:
    """One KTO run on the pairs' responses, unpaired; the defaults are chapter 08's KTO recipe: DPO's budget (steps,
    responses per step, learning rate, β) and the paper's weights for balanced data."""

    steps: int = 40
    """Optimizer steps."""
    batch_examples: int = 64
    """Examples (one response each) per step: as many responses as DPO's 32 pairs."""
    beta: float = 0.1
    """β: the scale of the log-ratio inside the value function."""
    lambda_d: float = 1.0
    """λ_D, the weight of desirable examples."""
    lambda_u: float = 1.0
    """λ_U, the weight of undesirable examples (λ_D n_D / (λ_U n_U) in [1, 4/3] is the paper's advice; here n_D = n_U)."""
    lr: float = 1e-4
    """AdamW learning rate (constant, no weight decay)."""
    eval_every: int = 0
    """Call ``on_eval`` every this many steps (and before the first); 0: never."""
    seed: int = 0
    """Seed of the order in which examples are drawn."""


N_PAIR_PROBLEMS = 1000
"""Training problems that chapter 08's pairs come from (each answered twice by the base model)."""


def chapter_pairs(base: GPT, seed: int = 0) -> PreferencePairs:
    """Chapter 08's preference pairs for ``seed``: the base model's two answers to each of 1,000 training problems
    (`taskworld.sample_problems(1000, seed=800 + seed)`), labelled by the rules, ties left out
    (`preferences.sample_pairs`; about 440 pairs)."""
    return sample_pairs(base, tw.sample_problems(N_PAIR_PROBLEMS, seed=800 + seed), seed=seed)


def pair_batch(pairs: PreferencePairs, index: list[int]) -> Responses:
    """The chosen responses of ``pairs[index]`` then their rejected ones, one batch of 2·len(index) rows."""
    sub = pairs.subset(index)
    prompts = prompt_ids(sub.problems)
    return pack_responses(prompts + prompts, sub.chosen + sub.rejected)


def policy_pair_logprobs(model: GPT, pairs: PreferencePairs, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's log-probs of ``pairs[index]``'s chosen and rejected responses, (b,) each: one forward pass of
    `pair_batch`, in training mode, with gradients."""
    model.train()
    logps = response_logprobs(model, pair_batch(pairs, index))           # (2b,)
    return logps[:len(index)], logps[len(index):]


def response_lens(responses: Sequence[list[int]], device: torch.device | str | None = None) -> torch.Tensor:
    """(N,) the number of tokens of each response (end-of-text included): what per-token averages divide by."""
    return torch.tensor([len(r) for r in responses], device=device)


@torch.no_grad()
def example_logprobs(model: GPT, problems: Sequence[tw.Problem], responses: Sequence[list[int]],
                     batch_rows: int = 256) -> torch.Tensor:
    """log π(y|x) under ``model`` of each response after its problem's prompt, (N,), without gradients."""
    was_training = model.training
    model.eval()
    logps = [response_logprobs(model, pack_responses(prompt_ids(problems[start:start + batch_rows]),
                                                     list(responses[start:start + batch_rows])))
             for start in range(0, len(problems), batch_rows)]
    model.train(was_training)
    return torch.cat(logps)                                               # (N,)


def pair_logprobs(model: GPT, pairs: PreferencePairs) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y|x) under ``model`` of every chosen and every rejected response, (N,) each, without gradients.

    Before training this is the reference's log-probs; during training, how likely the policy finds the pairs.
    """
    logps = example_logprobs(model, pairs.problems + pairs.problems, pairs.chosen + pairs.rejected)   # (2N,)
    return logps[:len(pairs)], logps[len(pairs):]


def batch_schedule(n: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The indices of ``range(n)`` that each step trains on: passes over them in seeded random order, the next
    pass (a fresh shuffle) appended whenever fewer than ``batch`` are left.

    >>> batch_schedule(5, batch=2, steps=4, seed=0)     # 4 0 1 3 2 | 3 4 0 …
    [[4, 0], [1, 3], [2, 3], [4, 0]]
    """
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    schedule = []
    for _ in range(steps):
        while len(order) < batch:
            order += torch.randperm(n, generator=g).tolist()
        schedule.append(order[:batch])
        order = order[batch:]
    return schedule


LossFn = Callable[..., torch.Tensor]


def train_dpo(model: GPT, pairs: PreferencePairs, cfg: DPOConfig, loss_fn: LossFn = dpo_loss,
              nll_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = chosen_nll,
              on_eval: Callable[[int, GPT], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    """Train ``model`` in place with DPO (or RPO when ``cfg.rpo_alpha > 0``) on ``pairs``.

    The reference is ``model`` as it is before the first step: its log-probs are computed once.
    ``loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`` is the DPO loss and
    ``nll_fn(policy_chosen, chosen_lens)`` RPO's SFT term (a learner's own can be passed for either).
    ``on_eval(step, model)`` is called every ``cfg.eval_every`` steps, before the first and after the last.
    Returns per-step metrics: ``loss``, ``chosen_reward``, ``rejected_reward``, ``margin`` (means over the
    batch), ``accuracy``, ``chosen_logp`` and ``rejected_logp`` (mean sequence log-probs under the policy);
    ``reference_logps``, how many reference log-probs the run holds (2 per pair); and ``seconds`` (training
    time, the reference's pass included, evaluations not counted).
    """
    log = RunLog(model, on_eval if cfg.eval_every else None)
    device = next(model.parameters()).device
    # Stage 0: the reference's log-probs, once: constants of the objective, no graph kept
    ref_chosen, ref_rejected = (x.to(device) for x in pair_logprobs(model, pairs))   # (N,) each
    chosen_lens = response_lens(pairs.chosen, device)                                # (N,)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = batch_schedule(len(pairs), cfg.batch_pairs, cfg.steps, cfg.seed)
    for step in tqdm(range(cfg.steps), desc="DPO steps", disable=not progress):
        if cfg.eval_every and step % cfg.eval_every == 0:
            log.evaluate(step)
        # Stage 1: the policy's log-probs of a batch's chosen and rejected responses, one forward pass
        index = schedule[step]
        pc, pr = policy_pair_logprobs(model, pairs, index)                          # (b,) each
        rc, rr = ref_chosen[index], ref_rejected[index]                            # (b,) each
        # Stage 2: the loss (DPO, plus the chosen responses' NLL per token for RPO), one step
        loss = rpo_loss(pc, pr, rc, rr, chosen_lens[index], cfg.beta, cfg.rpo_alpha, loss_fn, nll_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Stage 3: what an expert watches
        cr, rj, acc = implicit_rewards(pc, pr, rc, rr, cfg.beta)
        log.add(loss=loss.item(), chosen_reward=cr.mean().item(), rejected_reward=rj.mean().item(),
                margin=(cr - rj).mean().item(), accuracy=acc, chosen_logp=pc.mean().item(), rejected_logp=pr.mean().item())
    log.evaluate(cfg.steps)
    log.add(reference_logps=2 * len(pairs))
    model.eval()
    return log.finish()


def train_orpo(model: GPT, pairs: PreferencePairs, cfg: ORPOConfig, loss_fn: LossFn = orpo_loss,
               on_eval: Callable[[int, GPT], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    """Train ``model`` in place with ORPO on ``pairs``: no reference model, no reference pass.

    ``loss_fn(policy_chosen, policy_rejected, chosen_lens, rejected_lens, lam)`` is the ORPO loss (a learner's own
    can be passed). ``on_eval`` as in `train_dpo`. Returns per-step metrics: ``loss``, ``nll`` (the chosen responses'
    NLL per token), ``log_odds_ratio`` (mean over the batch) and ``accuracy`` (share of pairs whose chosen response
    has the higher odds), as TRL logs them; ``chosen_logp``, ``rejected_logp`` (mean sequence log-probs);
    ``reference_logps`` (0) and ``seconds``.
    """
    log = RunLog(model, on_eval if cfg.eval_every else None)
    device = next(model.parameters()).device
    chosen_lens, rejected_lens = response_lens(pairs.chosen, device), response_lens(pairs.rejected, device)  # (N,)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = batch_schedule(len(pairs), cfg.batch_pairs, cfg.steps, cfg.seed)
    for step in tqdm(range(cfg.steps), desc="ORPO steps", disable=not progress):
        if cfg.eval_every and step % cfg.eval_every == 0:
            log.evaluate(step)
        # Stage 1: the policy's log-probs of a batch's chosen and rejected responses, one forward pass (no reference)
        index = schedule[step]
        pc, pr = policy_pair_logprobs(model, pairs, index)                          # (b,) each
        lc, lr = chosen_lens[index], rejected_lens[index]                          # (b,) each
        # Stage 2: the loss (SFT on the chosen responses + λ · the odds-ratio term), one step
        loss = loss_fn(pc, pr, lc, lr, cfg.lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Stage 3: what an expert watches
        with torch.no_grad():
            ratio = log_odds(pc / lc) - log_odds(pr / lr)                         # (b,)
        log.add(loss=loss.item(), nll=chosen_nll(pc, lc).item(), log_odds_ratio=ratio.mean().item(),
                accuracy=(ratio > 0).float().mean().item(), chosen_logp=pc.mean().item(), rejected_logp=pr.mean().item())
    log.evaluate(cfg.steps)
    log.add(reference_logps=0)
    model.eval()
    return log.finish()


def train_kto(model: GPT, pairs: PreferencePairs, cfg: KTOConfig, loss_fn: LossFn = kto_loss,
              on_eval: Callable[[int, GPT], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    """Train ``model`` in place with KTO on the responses of ``pairs``, unpaired: each chosen response is a desirable
    example, each rejected one an undesirable example, and batches draw from the 2N examples in any mix.

    Each step also scores *mismatched* rows, the batch's prompts with its responses rotated by one (TRL's KL rows),
    whose mean log-ratio is the reference point z0. The reference is ``model`` before the first step; its
    log-probs of every example and of every step's mismatched rows are computed once (the schedule of batches is
    drawn first); the policy scores the mismatched rows without gradients (z0 is detached).
    ``loss_fn(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, beta, lambda_d, lambda_u)``: the
    KTO loss. Returns per-step metrics: ``loss``, ``kl`` (z0), ``chosen_reward``, ``rejected_reward`` (mean
    β log π/π_ref of the batch's desirable and undesirable examples), ``chosen_logp``, ``rejected_logp`` (their
    mean sequence log-probs); ``reference_logps`` (how many the run holds) and ``seconds``.
    """
    log = RunLog(model, on_eval if cfg.eval_every else None)
    device = next(model.parameters()).device
    problems, responses = pairs.problems + pairs.problems, pairs.chosen + pairs.rejected   # 2N examples
    desirable = torch.arange(len(problems), device=device) < len(pairs)                     # (2N,) chosen: True
    schedule = batch_schedule(len(problems), cfg.batch_examples, cfg.steps, cfg.seed)
    kl_rows = [index[-1:] + index[:-1] for index in schedule]        # the response of the batch's previous example
    # Stage 0: the reference's log-probs, once: the examples (2N,) and each step's mismatched rows (steps, B)
    ref_logps = example_logprobs(model, problems, responses).to(device)
    ref_kl_logps = example_logprobs(model, [problems[i] for index in schedule for i in index],
                                    [responses[j] for rows in kl_rows for j in rows]).to(device).view(cfg.steps, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    for step in tqdm(range(cfg.steps), desc="KTO steps", disable=not progress):
        if cfg.eval_every and step % cfg.eval_every == 0:
            log.evaluate(step)
        # Stage 1: the policy's log-probs of a batch of examples (with gradients) and of its mismatched rows (without)
        index = schedule[step]
        prompts = prompt_ids([problems[i] for i in index])
        model.train()
        logps = response_logprobs(model, pack_responses(prompts, [responses[i] for i in index]))   # (B,)
        with torch.no_grad():
            kl_logps = response_logprobs(model, pack_responses(prompts, [responses[j] for j in kl_rows[step]]))
        # Stage 2: the loss, one step
        good = desirable[index]                                                                   # (B,)
        loss = loss_fn(logps, ref_logps[index], good, kl_logps, ref_kl_logps[step], cfg.beta, cfg.lambda_d,
                       cfg.lambda_u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Stage 3: what an expert watches (TRL's KTO logs)
        rewards = cfg.beta * (logps - ref_logps[index]).detach()                                 # (B,)
        log.add(loss=loss.item(), kl=(kl_logps - ref_kl_logps[step]).mean().clamp(min=0).item(),
                chosen_reward=rewards[good].mean().item(), rejected_reward=rewards[~good].mean().item(),
                chosen_logp=logps[good].mean().item(), rejected_logp=logps[~good].mean().item())
    log.evaluate(cfg.steps)
    log.add(reference_logps=ref_logps.numel() + ref_kl_logps.numel())
    model.eval()
    return log.finish()


TRAINERS: dict[type, Callable[..., dict[str, list[float]]]] = {DPOConfig: train_dpo, ORPOConfig: train_orpo,
                                                               KTOConfig: train_kto}
"""The loop that trains each kind of run."""


def measured_run(base: GPT, pairs: PreferencePairs, cfg: DPOConfig | ORPOConfig | KTOConfig,
                 start: dict | None = None, progress: bool = False,
                 **loss_fns: Callable[..., torch.Tensor]) -> tuple[GPT, dict[str, list[float]], list[dict]]:
    """Train a copy of ``base`` with the loop of ``cfg``'s kind (`TRAINERS`), evaluating it every ``cfg.eval_every`` steps.

    Returns the trained copy, the per-step history, and one dict per evaluation: the step, the
    held-out metrics of `evaluate(model, k=4)` (sampled and greedy accuracy, reasoned share, accuracy
    of reasoned and of bare responses) and the mean log-prob under the policy of *all* the pairs'
    chosen and rejected responses (``chosen_logp``, ``rejected_logp``). ``start``: the step-0
    evaluation of an earlier run from the same base and pairs, reused instead of repeated.
    ``loss_fns`` go to the loop (`train_dpo`'s ``loss_fn`` and ``nll_fn``, `train_orpo`'s and `train_kto`'s ``loss_fn``).
    """
    evals: list[dict] = []

    def on_eval(step: int, model: GPT) -> None:
        if step == 0 and start is not None:
            evals.append(dict(start))
            return
        ev = evaluate(model, k=4)
        chosen, rejected = pair_logprobs(model, pairs)
        evals.append(dict(step=step, chosen_logp=chosen.mean().item(), rejected_logp=rejected.mean().item(),
                          **{k: ev[k] for k in ("sampled_accuracy", "greedy_accuracy", "reasoned_share",
                                                "reasoned_accuracy", "bare_accuracy", "format_rate")}))

    model = copy.deepcopy(base)
    history = TRAINERS[type(cfg)](model, pairs, cfg, on_eval=on_eval, progress=progress, **loss_fns)
    return model, history, evals
