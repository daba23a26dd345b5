"""Test-time compute: what a model gains from more tokens or more samples, without training (chapter 11).

Three ways to spend compute at inference, on one set of sampled responses:

- **Chain of thought**: the same model answers in the reasoned style (column sums, then the answer) or bare;
  `sample_in_style` forces the style by writing its first token (``<think>`` or ``<answer>``) for the model,
  so the two are compared on the same problems (`chain_of_thought`).
- **Majority vote** (self-consistency, Wang et al. 2022): answer N times, return the most common answer
  (`majority_vote`; responses without an answer are left out, ties go to the answer that appears first).
- **Best-of-N**: answer N times and return the response a verifier scores highest (`best_of_n`; ties go to the
  first): the rules (an oracle: then best-of-N is pass@N), chapter 07's outcome reward model, or a process
  reward model (`llmcourse.prm`).

Curves against N come from K samples per problem drawn once (K = 64 in the chapter's recipe, `RECIPE`): the
accuracy at N is the mean over the K / N disjoint groups of N consecutive samples of each problem (`groups`),
so every sample is used once at every N and each group is an honest draw of N samples; pass@N uses the
unbiased estimator of `llmcourse.evaluation.pass_at_k_curve`, the same expectation with less noise. The cost is
the generated tokens per problem: N times the mean response length (`tokens_per_response`).

Measured on the base model (``python -m llmcourse bench --skip-notebooks --only inference``): pass@1 34.0%, the vote
of 16 83.6% (of 64: 95.3%), best-of-16 by the ORM 86.4%, by the PRM 98.1–98.3% (3 seeds), pass@16 99.2%; reasoning
forced, 93.3% at 23 tokens per answer, bare 13.3% at 6. Best-of-N by the ORM peaks at N = 16 and falls to 63.3% at
N = 64 while the score of its choice keeps rising (`llmcourse/data/test_time_compute.json`, `load_results`).

Best-of-N moves the output distribution away from the model's: for a continuous reward, the best of N samples
has ``KL(π_bestofN ‖ π) = log N − (N − 1)/N`` (`best_of_n_kl`, Stiennon et al. 2020; Gao et al. 2023), an upper
bound for discrete rewards (`best_of_n_distribution`). Selecting harder against an imperfect reward model
can make the answers worse while its scores keep rising: over-optimisation (Gao et al. 2023).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.model import GPT
from llmcourse.sampling import Responses, pack_responses, prompt_ids, sample_responses
from llmcourse.tokenizer import special_id

RESULTS_PATH = Path(__file__).parent / "data" / "test_time_compute.json"
"""What ``python -m llmcourse bench --skip-notebooks --only inference`` measured (3 PRM seeds), for chapter 11's plots."""
STYLE_TOKEN = {tw.REASONED: tw.THINK, tw.BARE: tw.ANSWER}
"""The first response token of each style: forcing it forces the style."""


@dataclass(frozen=True)
class InferenceConfig:
    """How chapter 11 samples and selects; the defaults are its recipe."""

    n_samples: int = 64
    """K: responses per held-out problem, drawn once; every curve sub-samples them."""
    ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """The N of the curves (each divides K)."""
    temperature: float = 1.0
    """Sampling temperature."""
    seed: int = 0
    """Seed of the sampling."""
    aggregation: str = "min"
    """How the PRM's step scores become one score per response (`llmcourse.prm.aggregate_steps`)."""
    style_samples: int = 16
    """Responses per problem and style for the chain-of-thought comparison."""


RECIPE = InferenceConfig()
"""Chapter 11's settings: 64 samples per held-out problem at temperature 1, N = 1 … 64, PRM steps by their min."""
LIVE = InferenceConfig(n_samples=16, ns=(1, 2, 4, 8, 16))
"""The chapter's live run, the recipe at 16 samples per problem (about 10 s on one thread); the final comparison's
test-time rows are its N = 16."""


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_held_out(model: GPT, cfg: InferenceConfig = RECIPE,
                    problems: Sequence[tw.Problem] | None = None) -> Responses:
    """``cfg.n_samples`` responses to each held-out problem (prompt-major) at ``cfg.temperature``, seeded."""
    problems = list(tw.eval_problems() if problems is None else problems)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed)
    return sample_responses(model, problems, n_samples=cfg.n_samples, temperature=cfg.temperature, generator=g)


@torch.no_grad()
def sample_in_style(model: GPT, problems: Sequence[tw.Problem], style: str, n_samples: int = 1,
                    temperature: float = 1.0, generator: torch.Generator | None = None,
                    max_new_tokens: int = 48) -> Responses:
    """Answer every problem ``n_samples`` times in one style, forced by writing its first token for the model.

    The response starts with ``<think>`` (reasoned) or ``<answer>`` (bare); the model writes the rest. The forced
    token counts as a response token (it is in the response mask, the texts and the token counts), so each row is
    exactly what the model would have answered had it drawn that first token itself.
    """
    first = special_id(STYLE_TOKEN[style])
    prompts = [ids + [first] for ids in prompt_ids(problems)]
    r = sample_responses(model, prompts, n_samples=n_samples, max_new_tokens=max_new_tokens - 1,
                         temperature=temperature, generator=generator)
    rows = [p[:-1] for p in prompts for _ in range(n_samples)]
    return pack_responses(rows, [[first] + x for x in response_tokens(r)], n_samples=n_samples, device=r.ids.device)


def response_tokens(responses: Responses) -> list[list[int]]:
    """Each row's response token ids (its end-of-text token included when it finished)."""
    ids, mask = responses.ids.cpu(), responses.response_mask.cpu()
    return [ids[b][mask[b]].tolist() for b in range(len(responses))]


def tokens_per_response(responses: Responses) -> float:
    """Mean generated tokens per response (the end-of-text token included): the cost of one sample."""
    return responses.response_lens.float().mean().item()


# --------------------------------------------------------------------------- majority vote


def extract_answers(texts: Sequence[str]) -> list[str | None]:
    """The answer of each response (`taskworld.parse_answer`: the text inside ``<answer>…</answer>``), or None."""
    return [tw.parse_answer(t) for t in texts]


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most common answer among ``answers`` (self-consistency, Wang et al. 2022).

    None marks a response without an answer: it is left out of the vote (None is returned only when every
    response has none). A tie goes to the tied answer that appears first in ``answers``. ``answers`` is not changed.

    >>> majority_vote(["12", "13", "13", None, "12"]), majority_vote([None, None, "7"]), majority_vote([None])
    ('12', '7', None)
    """
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1                   # a dict keeps the order of first appearance
    if not counts:
        return None
    most = max(counts.values())
    return next(a for a, c in counts.items() if c == most)


def groups(n_items: int, n: int) -> list[slice]:
    """The ``n_items // n`` disjoint groups of ``n`` consecutive samples (``n`` must divide ``n_items``).

    >>> groups(8, 4)
    [slice(0, 4, None), slice(4, 8, None)]
    """
    if n < 1 or n_items % n:
        raise ValueError(f"{n} does not divide {n_items} samples")
    return [slice(i, i + n) for i in range(0, n_items, n)]


def vote_accuracy(answers: Sequence[str | None], problems: Sequence[tw.Problem], n: int) -> float:
    """Accuracy of the majority vote of ``n`` samples: answers prompt-major, K = len(answers) / len(problems)
    per problem; the mean over problems and over the K / n disjoint groups of n consecutive samples.

    >>> p = [tw.Problem(2, 3)]
    >>> vote_accuracy(["5", "6", "6", "5"], p, 1), vote_accuracy(["5", "6", "6", "5"], p, 2)
    (0.5, 0.5)
    """
    k = len(answers) // len(problems)
    right = [majority_vote(answers[i * k:(i + 1) * k][g]) == str(p.answer)
             for i, p in enumerate(problems) for g in groups(k, n)]
    return sum(right) / len(right)


def vote_curve(answers: Sequence[str | None], problems: Sequence[tw.Problem], ns: Sequence[int]) -> list[float]:
    """`vote_accuracy` at each N of ``ns``."""
    return [vote_accuracy(answers, problems, n) for n in ns]


# --------------------------------------------------------------------------- best-of-N


def best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Which of each problem's first ``n`` samples a verifier picks: scores (P, K) -> (P,) long in [0, n).

    Row i holds the scores of problem i's K samples; only the first ``n`` (n ≤ K) take part. The highest score
    wins; a tie goes to the first of the tied samples. ``scores`` is not changed.

    >>> best_of_n(torch.tensor([[0.1, 0.9, 0.9, 2.0], [1.0, 0.0, 1.0, 1.0]]), 3)
    tensor([1, 0])
    """
    return scores[:, :n].argmax(dim=1)                          # torch.argmax returns the first maximal index


def best_of_n_mean(scores: torch.Tensor, values: torch.Tensor, n: int) -> float:
    """Mean of ``values`` at the sample that best-of-``n`` picks, over problems and over the K / n disjoint
    groups of n samples: scores, values (P, K). With values the 0/1 correctness: the accuracy of best-of-n; with
    values the scores themselves: the verifier's mean score of the chosen response."""
    picked = [values[:, g].gather(1, best_of_n(scores[:, g], n).unsqueeze(1)) for g in groups(scores.size(1), n)]
    return torch.cat(picked, dim=1).float().mean().item()


def best_of_n_curve(scores: torch.Tensor, values: torch.Tensor, ns: Sequence[int]) -> list[float]:
    """`best_of_n_mean` at each N of ``ns``."""
    return [best_of_n_mean(scores, values, n) for n in ns]


def best_of_n_kl(n: int) -> float:
    """``log n − (n − 1)/n``: KL(best-of-n ‖ π) in nats for a reward with no ties (Stiennon et al. 2020; Gao et al.
    2023; an upper bound when rewards can tie, Beirami et al. 2024).

    >>> best_of_n_kl(1), round(best_of_n_kl(16), 4)
    (0.0, 1.8351)
    """
    return math.log(n) - (n - 1) / n


def best_of_n_distribution(probs: torch.Tensor, n: int) -> torch.Tensor:
    """The distribution of the best of ``n`` independent draws from a categorical whose outcomes are sorted by
    reward (increasing, no ties): probs (M,) -> (M,), ``F(i)^n − F(i−1)^n`` with F the cumulative probability.

    >>> best_of_n_distribution(torch.tensor([0.5, 0.5], dtype=torch.float64), 2).tolist()    # best of 2 coins
    [0.25, 0.75]
    """
    cdf = torch.cumsum(probs, dim=0)                            # (M,)
    below = torch.cat([torch.zeros(1, dtype=cdf.dtype), cdf[:-1]])
    return cdf ** n - below ** n


# --------------------------------------------------------------------------- judging a verifier


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that a random right response (label True) scores higher than a
    random wrong one, a tie counting half. Threshold-free, so scores on any scale compare. scores, labels (B,).

    >>> auroc(torch.tensor([0.9, 0.2, 0.5, 0.5]), torch.tensor([True, False, True, False]))
    0.875
    """
    s, y = scores.double().cpu(), labels.bool().cpu()
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)                  # (n_pos, n_neg)
    return ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold t that makes "score > t means right" most accurate on these responses (the midpoint between
    two neighbouring scores). Chosen on training responses, then applied to held-out ones (`threshold_accuracy`).

    >>> best_threshold(torch.tensor([0.25, 0.5, 0.75, 1.0]), torch.tensor([False, False, True, True]))
    0.625
    """
    s = torch.unique(scores.double().cpu())                     # sorted distinct scores
    cuts = torch.cat([s[:1] - 1, (s[1:] + s[:-1]) / 2, s[-1:] + 1])
    accuracy = [threshold_accuracy(scores, labels, c.item()) for c in cuts]
    return cuts[max(range(len(cuts)), key=accuracy.__getitem__)].item()


def threshold_accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> float:
    """Share of responses that "score > threshold means right" classifies correctly."""
    return ((scores.double().cpu() > threshold) == labels.bool().cpu()).double().mean().item()


def wrong_pick_rate(scores: torch.Tensor, correct: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
    """Where a verifier goes wrong: over the problems whose kept samples (``keep``, e.g. the reasoned ones) include
    both a right and a wrong one, how often the kept sample it scores highest is wrong (``verifier``), against the
    share of wrong ones among the kept samples (``random``, a blind pick). scores, correct, keep (P, K).

    >>> s = torch.tensor([[0.9, 0.5, 0.4, 0.1], [0.2, 0.3, 0.0, 0.0]])
    >>> right = torch.tensor([[False, True, True, False], [True, True, True, True]])
    >>> wrong_pick_rate(s, right, torch.ones(2, 4, dtype=torch.bool))
    {'verifier': 1.0, 'random': 0.5, 'problems': 1}
    """
    top, blind = [], []
    for s, c, k in zip(scores, correct, keep):
        if c[k].any() and (~c[k]).any():
            top.append(float(not c[k][s[k].argmax()]))
            blind.append((~c[k]).float().mean().item())
    n = len(top)
    return {"verifier": sum(top) / n if n else float("nan"), "random": sum(blind) / n if n else float("nan"),
            "problems": n}


# --------------------------------------------------------------------------- chain of thought


@torch.no_grad()
def chain_of_thought(model: GPT, problems: Sequence[tw.Problem] | None = None, n_samples: int = 16,
                     temperature: float = 1.0, seed: int = 0) -> dict[str, dict[str, float]]:
    """The same model's accuracy and generated tokens per response when it reasons, when it answers bare (each
    forced by its first token, `sample_in_style`), and in the style it picks itself ("own"), on the held-out
    problems by default: ``{"reasoned": {"accuracy": …, "tokens": …}, "bare": …, "own": …}``."""
    problems = list(tw.eval_problems() if problems is None else problems)
    device = next(model.parameters()).device
    out = {}
    for style in (tw.REASONED, tw.BARE, "own"):
        g = torch.Generator(device=device).manual_seed(seed)
        if style == "own":
            r = sample_responses(model, problems, n_samples=n_samples, temperature=temperature, generator=g)
        else:
            r = sample_in_style(model, problems, style, n_samples=n_samples, temperature=temperature, generator=g)
        right = [tw.is_correct(t, p) for t, p in zip(r.texts, r.per_row(problems))]
        out[style] = {"accuracy": sum(right) / len(right), "tokens": tokens_per_response(r)}
    return out


def load_results(path: Path = RESULTS_PATH) -> dict:
    """The measured curves and tables of chapter 11 (written by its benchmark; see `RESULTS_PATH`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def correct_matrix(responses: Responses, problems: Sequence[tw.Problem]) -> torch.Tensor:
    """(P, K) bool: is each of the K responses per problem right by the rules (prompt-major rows)."""
    right = [tw.is_correct(t, p) for t, p in zip(responses.texts, responses.per_row(problems))]
    return torch.tensor(right).view(len(problems), responses.n_samples)

