"""A process reward model: a verifier that scores every step of a response, not only its outcome (chapter 11).

In the task world every column sum of a reasoned response is a checkable *step*, so step labels come free from
the rules, as PRM800K's human labels do for maths (Lightman et al. 2023, "Let's verify step by step")::

    problem    47 + 385                        true steps  7+5=12 · 4+8+1=13 · 0+3+1=4 · answer 432
    response   <think>7+5=12,4+8+1=12,0+3+1=4</think><answer>422</answer>
    steps      7+5=12    4+8+1=12    0+3+1=4    answer 422
    labels     right     WRONG       wrong      wrong          (the first wrong step and all after it are wrong)
    read at    ","       ","         "</think>" <|endoftext|>  (the token that ends each step)

`step_labels` writes them (a step is right when it is written exactly as the true column sum at its position and
every step before it is right; the answer is the last step, right when the rules say so and the column sums
before it are complete and right; a bare response has the answer step alone). `step_end_positions` finds the
token that ends each step: the "," after a column sum, the "</think>" after the last one, and the response's
last token (its end-of-text) for the answer, the very position where chapter 07's outcome reward model (ORM)
reads its score.

`ProcessRewardModel` judges a step the way the base model writes one: it is the base model (body and
language-model head) and two numbers, a and b, and its logit for step k is ``a · log π(response up to the end of
step k) + b``, σ of it P(step right). A token it would not have written (a wrong digit, a miscopied operand)
pulls that step and all after it down, as the labels do. It is trained with binary cross-entropy on the step labels
of the base model's own answers to training problems (`PRMConfig`, never a held-out problem), a and b fast, the
body slowly. The textbook design, chapter 07's reward model read at each step's end (`StepHeadPRM`), must redo a
column sum after it is written; trained the same way, its 4-layer body did not learn to, and it ranks wrong
reasoned responses no better than the ORM (`llmcourse.tooling.benchmarks.inference` measures both).
`aggregate_steps` turns a response's step scores into one number ("min", "product" or "last"), which best-of-N
ranks (`llmcourse.inference`).

Measured (``python -m llmcourse bench --skip-notebooks --only inference``, 3 seeds, on 64 samples of the base model
per held-out problem): step accuracy 95.6–96.6%; response-level AUROC 0.976–0.980 against the ORM's 0.914, and among
reasoned responses 0.998 against 0.489; best-of-16 98.1–98.3% against the ORM's 86.4% and pass@16's 99.2%.

The course ships the trained PRM (``llmcourse/data/prm.pt``, sha256-checked, with its measured metrics);
``python -m llmcourse.prm`` rebuilds it (one thread, deterministic, about 2 minutes of training, 3.5 in all)::

    prm = load_prm(device)
    scores, mask = score_steps(prm, responses)           # (B, S) P(step right), (B, S) which steps exist
    score = aggregate_steps(scores, mask, "min")         # (B,) one score per response
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.checkpoint import file_sha256, load_base_model, load_verified, save_gpt_based, tied_state_dict
from llmcourse.inference import auroc, best_threshold, threshold_accuracy
from llmcourse.logprobs import token_logprobs
from llmcourse.model import GPT, GPTConfig
from llmcourse.reward_model import RewardModel
from llmcourse.run_log import RunLog
from llmcourse.runtime import torch_threads
from llmcourse.sampling import Responses, sample_responses
from llmcourse.tokenizer import get_encoding

PRM_PATH = Path(__file__).parent / "data" / "prm.pt"
PRM_SHA256 = "0fcd8c6af392dd9e0d94ab207cdb0b7b99b958793ee8acd16a032f508a81758d"
"""sha256 of the shipped ``prm.pt`` (printed by ``python -m llmcourse.prm``)."""
AGGREGATIONS = ("min", "product", "last")
"""How step scores become one score per response (`aggregate_steps`)."""


# --------------------------------------------------------------------------- steps and their labels


def column_steps(text: str) -> tuple[list[str], bool]:
    """The column sums a response writes, and whether its reasoning is closed by ``</think>``.

    A column sum is a step when a "," or the closing ``</think>`` ends it; the text after the last "," of a
    reasoning that never closes (cut off, or broken by another tag) is not. A bare response has none.

    >>> column_steps("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>")
    (['7+5=12', '4+8+1=13', '0+3+1=4'], True)
    >>> column_steps("<think>7+5=12,4+8<answer>12</answer>"), column_steps("<answer>432</answer>")
    ((['7+5=12'], False), ([], False))
    """
    text = tw.strip_eos(text)
    if tw.THINK not in text:
        return [], False
    body = text.split(tw.THINK, 1)[1]
    closed = tw.END_THINK in body
    reasoning = body.split(tw.END_THINK, 1)[0] if closed else body.split("<", 1)[0]
    pieces = reasoning.split(",")
    return (pieces if closed else pieces[:-1]), closed


def step_labels(response_text: str, problem: tw.Problem) -> list[bool]:
    """Is each step of a response right? The column sums it writes, then its answer: a list of S bools.

    Column sum i is right when it is written exactly as the true one at that position
    (``taskworld.reasoning(problem).split(",")[i]``) and every step before it is right: the first wrong step
    and all after it are wrong. The answer, always the last step, is right when the rules say so
    (`taskworld.is_correct`), the steps before it are right and, for a reasoned response, none is missing
    (the reasoning is closed after exactly as many column sums as the problem has columns). A bare response
    has one step, its answer. ``response_text`` may end with the end-of-text token.

    >>> p = tw.Problem(47, 385)                           # true steps 7+5=12, 4+8+1=13, 0+3+1=4; answer 432
    >>> step_labels("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>", p)
    [True, True, True, True]
    >>> step_labels("<think>7+5=12,4+8+1=12,0+3+1=4</think><answer>422</answer>", p)
    [True, False, False, False]
    >>> step_labels("<answer>432</answer>", p), step_labels("<think>7+5=12,4+8+1=13</think><answer>432</answer>", p)
    ([True], [True, True, False])
    """
    text = tw.strip_eos(response_text)
    written, closed = column_steps(text)
    true = tw.reasoning(problem).split(",")
    labels, ok = [], True
    for i, step in enumerate(written):
        ok = ok and i < len(true) and step == true[i]
        labels.append(ok)
    complete = not tw.is_reasoned(text) or (closed and len(written) == len(true))
    labels.append(ok and complete and tw.is_correct(text, problem))
    return labels


def step_end_positions(response_ids: Sequence[int]) -> list[int]:
    """Where each step of a response ends: the index (in ``response_ids``) of the token the head reads, one per
    step of `step_labels` in the same order.

    A column sum ends at the "," after it or at ``</think>``; the answer ends at the response's last token (its
    end-of-text token when it finished), where chapter 07's reward model reads its one score.

    >>> from llmcourse.tokenizer import encode
    >>> ids = encode("<think>7+5=12,4+8+1=13</think><answer>132</answer><|endoftext|>")
    >>> step_end_positions(ids), len(ids)
    ([7, 16, 22], 23)
    """
    enc = get_encoding()
    pieces = [enc.decode([t]) for t in response_ids]                 # one string per token
    ends_at = []                                                     # (T,) character offset where each token ends
    offset = 0
    for piece in pieces:
        offset += len(piece)
        ends_at.append(offset)
    text = "".join(pieces)
    written, closed = column_steps(text)
    positions, char = [], text.find(tw.THINK) + len(tw.THINK)
    for i, step in enumerate(written):
        char += len(step)                                            # the "," (or "</think>") after the step
        positions.append(next(t for t, end in enumerate(ends_at) if end > char))
        char += 1
    positions.append(len(response_ids) - 1)                          # the answer: the last token
    return positions


@dataclass
class StepTargets:
    """Where the head reads each step of a batch of responses, and the step labels: all (B, S), S the most steps."""

    positions: torch.Tensor
    """(B, S) long: column in ``ids`` of the token that ends each step (0 where a row has fewer steps)."""
    mask: torch.Tensor
    """(B, S) bool: True on the steps a response has (every response has at least its answer step)."""
    labels: torch.Tensor | None = None
    """(B, S) float: 1 where the step is right, 0 where it is wrong or missing; None when not labelled."""


def step_positions(responses: Responses) -> StepTargets:
    """`step_end_positions` of every row of a batch (as columns of ``responses.ids``), padded to the most steps."""
    ids, mask = responses.ids.cpu(), responses.response_mask.cpu()
    rows = [[int(responses.prompt_lens[b]) + e for e in step_end_positions(ids[b][mask[b]].tolist())]
            for b in range(len(responses))]
    S = max((len(r) for r in rows), default=1)
    positions = torch.zeros(len(rows), S, dtype=torch.long)          # (B, S)
    step_mask = torch.zeros(len(rows), S, dtype=torch.bool)          # (B, S)
    for b, pos in enumerate(rows):
        positions[b, :len(pos)] = torch.tensor(pos)
        step_mask[b, :len(pos)] = True
    device = responses.ids.device
    return StepTargets(positions.to(device), step_mask.to(device))


def step_targets(responses: Responses, problems: Sequence[tw.Problem]) -> StepTargets:
    """`step_positions` and the `step_labels` of every row of a batch, padded to the most steps S.

    ``problems``: one per row, or one per prompt (repeated ``n_samples`` times, prompt-major).
    """
    if len(problems) != len(responses):
        problems = responses.per_row(problems)
    out = step_positions(responses)
    labels = torch.zeros(out.mask.shape)                              # (B, S)
    for b, (text, p) in enumerate(zip(responses.texts, problems)):
        row = step_labels(text, p)
        if len(row) != int(out.mask[b].sum()):
            raise AssertionError(f"{len(row)} labels for {int(out.mask[b].sum())} step ends in {text!r}")
        labels[b, :len(row)] = torch.tensor(row, dtype=torch.float32)
    out.labels = labels.to(out.mask.device)
    return out


def aggregate_steps(scores: torch.Tensor, mask: torch.Tensor, how: str = "min") -> torch.Tensor:
    """One score per response from its steps' scores: scores (B, S) in [0, 1], mask (B, S) bool -> (B,).

    ``scores[b, s]`` is the verifier's probability that step s of response b is right; ``mask`` is True on the
    steps a response has (left-aligned: its steps first, then padding, whose scores are anything). Every row has
    at least one step. ``how``:

    - "min": the weakest step (a chain is as good as its worst link; Math-Shepherd);
    - "product": the probability that every step is right, if the steps' errors were independent
      (Lightman et al. 2023);
    - "last": the last step's score alone (here the answer's, read where an outcome model reads).

    `ProcessRewardModel`'s step scores never rise along a response (a > 0, and each token adds a log-probability
    ≤ 0), so for it "min" and "last" agree; for `StepHeadPRM` they need not.

    >>> scores = torch.tensor([[0.75, 0.5, 1.0], [0.5, 0.25, 0.0]])
    >>> mask = torch.tensor([[True, True, True], [True, True, False]])
    >>> [aggregate_steps(scores, mask, how).tolist() for how in ("min", "product", "last")]
    [[0.5, 0.25], [0.375, 0.125], [1.0, 0.25]]
    """
    if how == "min":
        return torch.where(mask, scores, torch.ones_like(scores)).min(dim=1).values      # padding never the min
    if how == "product":
        return torch.where(mask, scores, torch.ones_like(scores)).prod(dim=1)            # padding multiplies by 1
    if how == "last":
        last = mask.long().sum(dim=1) - 1                                                # (B,) the last step's index
        return scores.gather(1, last.unsqueeze(1)).squeeze(1)
    raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")


# --------------------------------------------------------------------------- the model


class ProcessRewardModel(nn.Module):
    """A verifier that checks every token where a model computes it: the base model (body and language-model
    head, trained on) and two numbers, a scale ``a`` and a bias ``b``.

    Its logit for step k of a response is ``a · log π(response up to the end of step k) + b``: the log-probability
    it gives the response's tokens so far (all but the first, which only chooses the style), turned into
    P(step right) by σ. A step is believed when the PRM would itself have written every token up to it; a token
    it would not have written (a wrong digit) pulls that step and all after it down, as the labels do.
    """

    def __init__(self, lm: GPT, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.lm = lm
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    @classmethod
    def from_base(cls, base: GPT) -> "ProcessRewardModel":
        """A PRM whose language model is a copy of ``base`` (the base model itself is not changed)."""
        return cls(copy.deepcopy(base))

    def head_parameters(self) -> list[nn.Parameter]:
        """The calibration, ``a`` and ``b`` (trained at `PRMConfig.head_lr`)."""
        return [self.scale, self.bias]

    def forward(self, ids: torch.Tensor, prompt_lens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids (B, T), prompt_lens (B,), positions (B, S) columns of the steps' end tokens -> (B, S) step logits."""
        logp = token_logprobs(self.lm, ids)                                       # (B, T-1) column t scores token t+1
        columns = torch.arange(logp.size(1), device=ids.device)                   # (T-1,)
        counted = columns.unsqueeze(0) >= prompt_lens.unsqueeze(1)                 # (B, T-1) tokens after the first
        prefix = torch.cumsum(torch.where(counted, logp, torch.zeros_like(logp)), dim=1)   # log π of tokens ≤ t+1
        at_end = prefix.gather(1, (positions - 1).clamp(min=0))                   # (B, S) padding steps read column 0
        return self.scale * at_end + self.bias                                    # (B, S)


class StepHeadPRM(RewardModel):
    """The textbook alternative: chapter 07's reward model (the base model's body, a scalar head at every position)
    read at the end of each step, ``σ(head) = P(step right)``. It must redo a step's arithmetic after the step is
    written; measured, a 4-layer body trained as `ProcessRewardModel` is does not learn to: among reasoned
    responses its AUROC is 0.61, best-of-16 87.1% (`llmcourse.tooling.benchmarks.inference`)."""

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def forward(self, ids: torch.Tensor, prompt_lens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids (B, T), prompt_lens (B,) (unused), positions (B, S) -> (B, S) step logits."""
        return self.values(ids).gather(1, positions)                              # (B, S)


def _rows(responses: Responses, steps: StepTargets, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, prompt_lens, positions) of some rows, the ids cut after their longest real row."""
    length = int((responses.prompt_lens[rows] + responses.response_lens[rows]).max())
    return responses.ids[rows][:, :length], responses.prompt_lens[rows], steps.positions[rows]


@torch.no_grad()
def score_steps(prm: nn.Module, responses: Responses, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The PRM's probability that each step of each response is right, and which steps exist: two (B, S)."""
    steps = step_positions(responses)
    probs = [torch.sigmoid(prm(*_rows(responses, steps, slice(i, i + batch_size))))
             for i in range(0, len(responses), batch_size)]
    return (torch.cat(probs) if probs else torch.zeros(0, 1)), steps.mask


def step_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the step logits against the step labels, averaged over the real steps: (B, S) -> ()."""
    per_step = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")    # (B, S)
    return per_step[mask].mean()


# --------------------------------------------------------------------------- training


@dataclass
class PRMConfig:
    """How the process reward model is trained; the defaults are the shipped model's recipe."""

    kind: str = "logprob"
    """"logprob": `ProcessRewardModel`; "step_head": `StepHeadPRM` (a scalar head at each step's end, `STEP_HEAD`)."""
    n_problems: int = 4000
    """Training problems (`taskworld.sample_problems`, never a held-out problem)."""
    samples_per_problem: int = 4
    """Responses of the base model per training problem, in the style it picks."""
    temperature: float = 1.0
    """Sampling temperature of the training responses."""
    problem_seed: int = 1100
    """Seed of the training problems."""
    steps: int = 500
    """Optimizer steps."""
    batch_size: int = 64
    """Responses per step."""
    lr: float = 3e-5
    """AdamW learning rate of the body, after a linear warmup; constant. Small: at the reward model's 3e-4 the
    body forgot more than it learned (exploratory, 16 held-out samples per problem: best-of-16 98.4% against 99.6%
    with the body frozen); frozen (0) it checks as well, with step accuracy about a point lower."""
    head_lr: float = 3e-2
    """AdamW learning rate of the head: the calibration a, b (which must travel a few units in a few hundred
    steps), or `StepHeadPRM`'s linear head."""
    warmup_steps: int = 10
    """Steps of linear warmup."""
    seed: int = 0
    """Seed of the sampling of the training responses and of the batches."""

    def to_dict(self) -> dict:
        return asdict(self)


def make_prm(base: GPT, cfg: PRMConfig) -> nn.Module:
    """A fresh PRM of ``cfg.kind`` built on a copy of ``base``."""
    if cfg.kind == "logprob":
        return ProcessRewardModel.from_base(base)
    if cfg.kind == "step_head":
        return StepHeadPRM.from_base(base)
    raise ValueError(f"unknown PRM kind {cfg.kind!r}")


def training_responses(base: GPT, cfg: PRMConfig) -> tuple[Responses, list[tw.Problem], StepTargets]:
    """The base model's own answers to ``cfg``'s training problems, the problem of each row, and their steps."""
    problems = tw.sample_problems(cfg.n_problems, seed=cfg.problem_seed)
    g = torch.Generator(device=next(base.parameters()).device).manual_seed(cfg.seed)
    responses = sample_responses(base, problems, n_samples=cfg.samples_per_problem, temperature=cfg.temperature,
                                 generator=g)
    rows = responses.per_row(problems)
    return responses, rows, step_targets(responses, rows)


def train_prm(prm: nn.Module, responses: Responses, targets: StepTargets, cfg: PRMConfig,
              progress: bool = True) -> dict[str, list[float]]:
    """Train ``prm`` in place for ``cfg.steps`` AdamW steps of ``cfg.batch_size`` responses (a fresh permutation
    each epoch) on `step_bce`; returns the loss and the step accuracy (σ > 0.5 against the label) per step."""
    g = torch.Generator().manual_seed(cfg.seed)
    head = {id(p) for p in prm.head_parameters()}
    body = [p for p in prm.parameters() if id(p) not in head]
    for p in body:
        p.requires_grad_(cfg.lr > 0)                                  # lr 0: the body frozen, no backward through it
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr, "base_lr": cfg.lr},
                             {"params": prm.head_parameters(), "lr": cfg.head_lr, "base_lr": cfg.head_lr}],
                            weight_decay=0.0, betas=(0.9, 0.95))
    order: list[int] = []
    prm.train()
    log = RunLog(keys=("loss", "step_accuracy"))
    for step in tqdm(range(cfg.steps), desc="PRM", disable=not progress, mininterval=1.0):
        # Stage 1: a batch of responses and their step labels
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(responses), generator=g).tolist()
        rows, order = order[:cfg.batch_size], order[cfg.batch_size:]
        labels, mask = targets.labels[rows], targets.mask[rows]                       # (b, S), (b, S)
        # Stage 2: step logits and the binary cross-entropy, an AdamW step
        logits = prm(*_rows(responses, targets, rows))                                 # (b, S)
        loss = step_bce(logits, labels, mask)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * min(1.0, (step + 1) / cfg.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        right = ((logits.detach() > 0).float() == labels)[mask].float().mean().item()
        log.add(loss=loss.item(), step_accuracy=right)
    prm.eval()
    return log.finish()


STEP_HEAD = PRMConfig(kind="step_head", lr=3e-4, head_lr=3e-4)
"""The textbook PRM for comparison: a scalar head read at each step's end, trained like chapter 07's reward model."""


# --------------------------------------------------------------------------- judging a PRM

HELD_OUT_SAMPLES = 16
"""Responses per held-out problem on which the PRM is judged."""
HELD_OUT_SEED = 1
"""Seed of their sampling (temperature 1)."""


def held_out_responses(base: GPT, n_samples: int = HELD_OUT_SAMPLES, seed: int = HELD_OUT_SEED) -> Responses:
    """``n_samples`` answers of ``base`` to each of the 256 held-out problems (temperature 1; never trained on)."""
    g = torch.Generator(device=next(base.parameters()).device).manual_seed(seed)
    return sample_responses(base, list(tw.eval_problems()), n_samples=n_samples, generator=g)


def response_scores(prm: nn.Module, responses: Responses, how: str = "min") -> torch.Tensor:
    """(B,) one score per response: its steps' scores (`score_steps`) aggregated by ``how`` (`aggregate_steps`)."""
    scores, mask = score_steps(prm, responses)
    return aggregate_steps(scores, mask, how)


def step_metrics(scores: torch.Tensor, targets: StepTargets) -> dict[str, float]:
    """How often "P(step right) > 0.5" agrees with the step labels: over all steps (``step_accuracy``), the
    right ones and the wrong ones; and the share of wrong steps (scores, labels and mask all (B, S))."""
    said_right, right, mask = scores > 0.5, targets.labels.bool(), targets.mask
    agree = said_right == right
    return {"step_accuracy": agree[mask].float().mean().item(),
            "right_step_accuracy": agree[mask & right].float().mean().item(),
            "wrong_step_accuracy": agree[mask & ~right].float().mean().item(),
            "wrong_share": (mask & ~right).sum().item() / mask.sum().item()}


def response_metrics(scores: torch.Tensor, correct: torch.Tensor, threshold: float) -> dict[str, float]:
    """A verifier's scores (B,) of responses against the rules (``correct`` (B,) bool): the AUROC, and the
    accuracy of "score > threshold means right" with a threshold chosen beforehand on training responses."""
    return {"auroc": auroc(scores, correct), "accuracy": threshold_accuracy(scores, correct, threshold),
            "threshold": threshold}


def build_prm(base: GPT, cfg: PRMConfig = PRMConfig(), progress: bool = True) -> tuple[nn.Module, dict]:
    """Sample the training responses, train a PRM on their step labels, and judge it on held-out responses.

    Returns the model and its metrics: the training data (responses, steps, share of wrong steps), the training
    time, step accuracy on held-out responses (`step_metrics`), and its response-level AUROC and accuracy
    (`response_metrics`, ``how`` = "min", threshold chosen on the training responses)."""
    start = time.perf_counter()
    responses, rows, targets = training_responses(base, cfg)
    torch.manual_seed(cfg.seed)
    prm = make_prm(base, cfg)
    history = train_prm(prm, responses, targets, cfg, progress=progress)
    train_correct = torch.tensor([tw.is_correct(t, p) for t, p in zip(responses.texts, rows)])
    threshold = best_threshold(response_scores(prm, responses), train_correct)
    held = held_out_responses(base)
    problems = held.per_row(list(tw.eval_problems()))
    held_targets = step_targets(held, problems)
    scores, _ = score_steps(prm, held)
    correct = torch.tensor([tw.is_correct(t, p) for t, p in zip(held.texts, problems)])
    reasoned = torch.tensor([tw.is_reasoned(t) for t in responses.texts])
    metrics = {"train_responses": len(responses), "train_steps": int(targets.mask.sum()),
               "train_wrong_share": step_metrics(torch.ones_like(targets.labels), targets)["wrong_share"],
               "train_reasoned_wrong_share": (~targets.labels.bool() & targets.mask)[reasoned].sum().item()
               / max(1, targets.mask[reasoned].sum().item()),
               "train_seconds": history["seconds"][0], "final_train_loss": sum(history["loss"][-20:]) / 20,
               **{f"held_out_{k}": v for k, v in step_metrics(scores, held_targets).items()},
               **{f"held_out_response_{k}": v for k, v in
                  response_metrics(aggregate_steps(scores, held_targets.mask, "min"), correct, threshold).items()},
               "total_seconds": time.perf_counter() - start}
    return prm, metrics


# --------------------------------------------------------------------------- the shipped PRM


def save_prm(prm: ProcessRewardModel, path: Path, metrics: dict, cfg: PRMConfig) -> None:
    """Save the language model's config and weights (without the tied lm_head), a and b, metrics and config."""
    save_gpt_based(prm, "lm", path, metrics, cfg.to_dict())


def load_prm(device: str | torch.device = "cpu", path: Path = PRM_PATH, sha256: str | None = PRM_SHA256
             ) -> ProcessRewardModel:
    """The course's trained process reward model, checksum-verified, in eval mode."""
    blob = load_verified(path, sha256, "python -m llmcourse.prm", what="process reward model")
    prm = ProcessRewardModel(GPT(GPTConfig(**blob["config"])))
    prm.load_state_dict(tied_state_dict(blob, "lm"))
    return prm.to(device).eval()


def prm_metrics(path: Path = PRM_PATH) -> dict:
    """The metrics recorded when the shipped PRM was trained: its training data and held-out accuracy (not its
    training time, which would change the file's checksum from one build to the next)."""
    return dict(torch.load(path, map_location="cpu", weights_only=True)["metrics"])


def main() -> None:
    """Rebuild ``llmcourse/data/prm.pt`` from the shipped base model (one thread, deterministic)."""
    cfg = PRMConfig()
    with torch_threads(1):
        prm, metrics = build_prm(load_base_model(), cfg)
    save_prm(prm, PRM_PATH, {k: v for k, v in metrics.items() if not k.endswith("seconds")}, cfg)   # reproducible
    print(f"{metrics['train_responses']} training responses, {metrics['train_steps']} steps, "
          f"{100 * metrics['train_wrong_share']:.1f}% of them wrong; {metrics['train_seconds']:.0f} s of training")
    print(f"held out: step accuracy {metrics['held_out_step_accuracy']:.3f} (wrong steps "
          f"{metrics['held_out_wrong_step_accuracy']:.3f}), response AUROC {metrics['held_out_response_auroc']:.3f}, "
          f"response accuracy {metrics['held_out_response_accuracy']:.3f}")
    print(f"wrote {PRM_PATH}, sha256 {file_sha256(PRM_PATH)}")


if __name__ == "__main__":
    main()
