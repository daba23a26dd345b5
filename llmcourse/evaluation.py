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
from llmcourse.model import GPT
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
