"""Evaluating a model on the task world: what the rules say of its greedy and sampled responses.

`evaluate` answers every held-out problem once greedily and ``k`` times by sampling, and
reports (on the 256 held-out problems unless told otherwise):

- ``greedy_accuracy`` / ``greedy_format_rate``: of the greedy (temperature 0) responses;
- ``sampled_accuracy``: the mean over all samples that are right, i.e. pass@1 estimated from k samples;
- ``pass_at_k``: the share of problems with at least one right answer among the k samples;
- ``format_rate``: the share of samples in the exact reasoned format (`taskworld.format_ok`);
- ``reasoned_share``: the share of samples that reason (contain ``<think>``), and
  ``reasoned_accuracy`` / ``bare_accuracy``: how often those that do, and those that don't, are right;
- ``accuracy_by_digits`` / ``accuracy_by_carries``: sampled accuracy by the longer operand's digits and
  by the number of carries (`taskworld.n_digits`, `taskworld.n_carries`).

pass@1 against pass@k: a model that is right on a problem in one sample out of four has pass@1 = 25%
there but pass@4 = 100%. The gap is what RL can close by making the right behaviour likelier; it cannot
(quickly) raise pass@k, which measures what the model can already do. `pass_at_k` is the unbiased
estimator of Chen et al. (2021) for n samples of which c are right.
"""

from __future__ import annotations

from math import comb
from typing import Callable, Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.kl import categorical_kl
from llmcourse.logprobs import masked_sum, target_mask
from llmcourse.model import GPT
from llmcourse.reward_model import RewardModel, score_responses
from llmcourse.sampling import sample_responses


@torch.no_grad()
def complete(model: GPT, problems: Sequence[tw.Problem], max_new_tokens: int = 48,
             temperature: float = 0.0, generator: torch.Generator | None = None,
             batch_size: int = 128) -> list[str]:
    """The model's response text (up to EOS) for each problem: greedy by default.

    A shortcut for ``sample_responses(...).texts`` (batched by prompt length, with the KV cache).
    """
    return sample_responses(model, list(problems), n_samples=1, max_new_tokens=max_new_tokens,
                            temperature=temperature, generator=generator, batch_size=batch_size).texts


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are right (Chen et al. 2021, eq. 1).

    The probability that k samples drawn without replacement from the n include a right one:
    ``1 - C(n - c, k) / C(n, k)``. With ``k == n`` it is 1 if any sample is right, else 0;
    with ``k == 1`` it is ``c / n``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 4)
    (0.25, 1.0, 0.0)
    >>> round(pass_at_k(10, 3, 2), 4)          # 1 - C(7,2)/C(10,2) = 1 - 21/45
    0.5333
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k_curve(correct: list[bool], n_samples: int) -> list[float]:
    """pass@k for k = 1 … n from prompt-major right/wrong flags of n samples per problem (`evaluate`'s
    ``sampled_correct``): the mean over problems of the unbiased estimator `pass_at_k`.

    Two problems, 4 samples each, one right once and one never:

    >>> [round(x, 3) for x in pass_at_k_curve([True, False, False, False] + [False] * 4, 4)]
    [0.125, 0.25, 0.375, 0.5]
    """
    if len(correct) % n_samples:
        raise ValueError(f"{len(correct)} flags do not split into groups of {n_samples}")
    counts = [sum(correct[i:i + n_samples]) for i in range(0, len(correct), n_samples)]
    return [sum(pass_at_k(n_samples, c, k) for c in counts) / len(counts) for k in range(1, n_samples + 1)]


def response_stats(texts: Sequence[str], problems: Sequence[tw.Problem]) -> dict[str, float]:
    """What the rules say of row-aligned responses: the share that is right (``accuracy``), in the reasoned
    format (``format_rate``) and that reasons at all (``reasoned_share``). What the training loops log per batch.

    >>> response_stats(["<think>2+3=5</think><answer>5</answer>", "<answer>6</answer>"], [tw.Problem(2, 3)] * 2)
    {'accuracy': 0.5, 'format_rate': 0.5, 'reasoned_share': 0.5}
    """
    if len(texts) != len(problems):
        raise ValueError(f"{len(texts)} responses but {len(problems)} problems")
    n = len(texts)
    return {"accuracy": sum(tw.is_correct(t, p) for t, p in zip(texts, problems)) / n,
            "format_rate": sum(tw.format_ok(t) for t in texts) / n,
            "reasoned_share": sum(tw.is_reasoned(t) for t in texts) / n}


def accuracy_by(problems: Sequence[tw.Problem], correct: Sequence[bool],
                key: Callable[[tw.Problem], int]) -> dict[int, float]:
    """Accuracy of row-aligned results grouped by ``key(problem)``, keys in increasing order.

    >>> ps = [tw.Problem(1, 2), tw.Problem(5, 5), tw.Problem(10, 3), tw.Problem(9, 9)]
    >>> accuracy_by(ps, [True, False, True, True], tw.n_carries)
    {0: 1.0, 1: 0.5}
    """
    groups: dict[int, list[bool]] = {}
    for p, ok in zip(problems, correct):
        groups.setdefault(key(p), []).append(bool(ok))
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def score_samples(problems: Sequence[tw.Problem], texts: Sequence[str], k: int) -> dict:
    """The sampled metrics of `evaluate` from ``k`` responses per problem (prompt-major rows).

    Row ``i * k + j`` is the j-th answer to ``problems[i]``. An empty style has accuracy NaN.
    """
    if len(texts) != len(problems) * k:
        raise ValueError(f"{len(texts)} responses for {len(problems)} problems × {k} samples")
    rows = [problems[i // k] for i in range(len(texts))]
    correct = [tw.is_correct(t, p) for t, p in zip(texts, rows)]
    reasoned = [tw.is_reasoned(t) for t in texts]
    n_right = [sum(correct[i * k:(i + 1) * k]) for i in range(len(problems))]

    def mean(xs: list[bool]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")
    return {
        "sampled_accuracy": mean(correct),
        "pass_at_k": sum(pass_at_k(k, c, k) for c in n_right) / len(problems),
        "format_rate": mean([tw.format_ok(t) for t in texts]),
        "reasoned_share": mean(reasoned),
        "reasoned_accuracy": mean([c for c, r in zip(correct, reasoned) if r]),
        "bare_accuracy": mean([c for c, r in zip(correct, reasoned) if not r]),
        "accuracy_by_digits": accuracy_by(rows, correct, tw.n_digits),
        "accuracy_by_carries": accuracy_by(rows, correct, tw.n_carries),
        "sampled_correct": correct,
    }


@torch.no_grad()
def evaluate(model: GPT, problems: Sequence[tw.Problem] | None = None, k: int = 4,
             temperature: float = 1.0, seed: int = 0) -> dict:
    """Greedy and sampled metrics on ``problems`` (default: the held-out set); see the module docstring.

    ``k`` samples per problem at ``temperature``, from a generator seeded with ``seed``. Also returns
    the texts: ``responses`` and ``correct`` (greedy, one per problem) and ``samples`` (k per problem,
    prompt-major) with ``sampled_correct``. ``k=0`` skips sampling (greedy metrics only).
    """
    problems = list(tw.eval_problems() if problems is None else problems)
    was_training = model.training
    model.eval()
    greedy = complete(model, problems)
    correct = [tw.is_correct(r, p) for r, p in zip(greedy, problems)]
    out: dict = {"greedy_accuracy": sum(correct) / len(problems),
                 "greedy_format_rate": sum(tw.format_ok(r) for r in greedy) / len(problems),
                 "k": k, "temperature": temperature, "n_problems": len(problems),
                 "responses": greedy, "correct": correct}
    if k > 0:
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        samples = sample_responses(model, problems, n_samples=k, temperature=temperature, generator=gen).texts
        out.update(score_samples(problems, samples, k), samples=samples)
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- the reward model against the rules


@torch.no_grad()
def evaluate_with_rm(model: GPT, rm: RewardModel, k: int = 4, seed: int = 0) -> dict:
    """Held-out metrics of `llmcourse.evaluation.evaluate` plus what the reward model says of the same samples.

    The 256 held-out problems, greedy once and ``k`` samples each at temperature 1 (the same samples as
    ``evaluate(model, k=k, seed=seed)``). Adds ``rm_score``, the mean score of the samples, and the mean score
    of each kind of sample: ``rm_score_right`` and ``rm_score_wrong`` (by the rules), ``rm_score_reasoned_wrong``
    (reasoned but wrong, what a policy that games the reward model would write) and ``rm_score_bare_right``.
    A kind with no sample has NaN. Also the share of samples that are reasoned but wrong.
    """
    problems = list(tw.eval_problems())
    was_training = model.training
    model.eval()
    greedy = complete(model, problems)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    r = sample_responses(model, problems, n_samples=k, temperature=1.0, generator=gen)
    out = score_samples(problems, r.texts, k)
    out["greedy_accuracy"] = sum(tw.is_correct(t, p) for t, p in zip(greedy, problems)) / len(problems)
    scores = score_responses(rm, r).cpu()                                            # (256 k,)
    right = torch.tensor(out["sampled_correct"])
    reasoned = torch.tensor([tw.is_reasoned(t) for t in r.texts])

    def mean_where(m: torch.Tensor) -> float:
        return scores[m].mean().item() if m.any() else float("nan")
    out.update(rm_score=scores.mean().item(), rm_score_right=mean_where(right), rm_score_wrong=mean_where(~right),
               rm_score_reasoned_wrong=mean_where(reasoned & ~right), rm_score_bare_right=mean_where(~reasoned & right),
               reasoned_wrong_share=(reasoned & ~right).float().mean().item(), samples=r.texts)
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- distance to another model


@torch.no_grad()
def kl_to_model(model: GPT, base: GPT, n_samples: int = 4, seed: int = 0) -> float:
    """Mean over ``model``'s sampled held-out responses of Σ_t KL(π(·|prefix) ‖ π_base(·|prefix)), in nats.

    The exact categorical KL at every response token (`llmcourse.kl.categorical_kl`), summed over the response:
    how far training moved the model where it actually answers (the course's final comparison).
    """
    problems = list(tw.eval_problems())
    g = torch.Generator().manual_seed(seed)
    r = sample_responses(model, problems, n_samples, generator=g)
    mask = target_mask(r.response_mask)                                 # (B, T-1)
    kl = torch.cat([categorical_kl(model(r.ids[i:i + 256, :-1]).float(), base(r.ids[i:i + 256, :-1]).float())
                    for i in range(0, len(r), 256)])                    # (B, T-1)
    return masked_sum(kl, mask, dim=1).mean().item()
