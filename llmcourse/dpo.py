"""Direct preference optimisation (DPO) and its variants IPO, SimPO and RPO, and a training loop.

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

The losses take sequence log-probs (B,) and return a scalar (the mean over pairs); the reference
log-probs are constants (detached inside), whatever the caller passes.

`train_dpo` is the offline loop: the pairs are fixed, the reference is the model before training,
so its log-probs are computed once, under ``torch.no_grad()``, before the first step (TRL's
``precompute_ref_log_probs``): one forward pass per pair instead of one per pair per step, and no
second copy of the model held during training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

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

    The loss is 0 at h = 1/(2β) and grows again beyond it: the margin has a target, not ∞.

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


@torch.no_grad()
def pair_logprobs(model: GPT, pairs: PreferencePairs, batch_pairs: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y|x) under ``model`` of every chosen and every rejected response, (N,) each, without gradients.

    Before training this is the reference's log-probs; during training, how likely the policy finds the pairs.
    """
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_pairs):
        index = list(range(start, min(start + batch_pairs, len(pairs))))
        batch = pair_batch(pairs, index)
        logps = response_logprobs(model, batch)                           # (2b,)
        chosen.append(logps[:len(index)])
        rejected.append(logps[len(index):])
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


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
    batch), ``accuracy``, ``chosen_logp`` and ``rejected_logp`` (mean sequence log-probs under the policy),
    and ``seconds`` (training time, evaluations not counted).
    """
    ref_chosen, ref_rejected = pair_logprobs(model, pairs)           # (N,) each, constants
    device = next(model.parameters()).device
    ref_chosen, ref_rejected = ref_chosen.to(device), ref_rejected.to(device)
    chosen_lens = torch.tensor([len(c) for c in pairs.chosen], device=device)   # (N,) response tokens, EOS included
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    order = torch.randperm(len(pairs), generator=g).tolist()
    log = RunLog(model, on_eval if cfg.eval_every else None)
    for step in tqdm(range(cfg.steps), desc="DPO steps", disable=not progress):
        if cfg.eval_every and step % cfg.eval_every == 0:
            log.evaluate(step)
        # Stage 1: a batch of pairs (a fresh shuffle after each pass over the data)
        if len(order) < cfg.batch_pairs:
            order += torch.randperm(len(pairs), generator=g).tolist()
        index, order = order[:cfg.batch_pairs], order[cfg.batch_pairs:]
        b = len(index)
        # Stage 2: the policy's log-probs of chosen and rejected responses, one forward pass
        model.train()
        logps = response_logprobs(model, pair_batch(pairs, index))                 # (2b,)
        pc, pr = logps[:b], logps[b:]                                              # (b,) each
        rc, rr = ref_chosen[index], ref_rejected[index]                            # (b,) each
        # Stage 3: the loss (DPO, plus the chosen responses' NLL per token for RPO), one step
        loss = rpo_loss(pc, pr, rc, rr, chosen_lens[index], cfg.beta, cfg.rpo_alpha, loss_fn, nll_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Stage 4: what an expert watches
        cr, rj, acc = implicit_rewards(pc, pr, rc, rr, cfg.beta)
        log.add(loss=loss.item(), chosen_reward=cr.mean().item(), rejected_reward=rj.mean().item(),
                margin=(cr - rj).mean().item(), accuracy=acc, chosen_logp=pc.mean().item(), rejected_logp=pr.mean().item())
    log.evaluate(cfg.steps)
    model.eval()
    return log.finish()


def measured_run(base: GPT, pairs: PreferencePairs, cfg: DPOConfig, loss_fn: LossFn = dpo_loss,
                 nll_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = chosen_nll,
                 start: dict | None = None, progress: bool = False) -> tuple[GPT, dict[str, list[float]], list[dict]]:
    """Train a copy of ``base`` with `train_dpo`, evaluating it every ``cfg.eval_every`` steps.

    Returns the trained copy, the per-step history, and one dict per evaluation: the step, the
    held-out metrics of `evaluate(model, k=4)` (sampled and greedy accuracy, reasoned share, accuracy
    of reasoned and of bare responses) and the mean log-prob under the policy of *all* the pairs'
    chosen and rejected responses (``chosen_logp``, ``rejected_logp``). ``start``: the step-0
    evaluation of an earlier run from the same base and pairs, reused instead of repeated.
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
    history = train_dpo(model, pairs, cfg, loss_fn=loss_fn, nll_fn=nll_fn, on_eval=on_eval, progress=progress)
    return model, history, evals
