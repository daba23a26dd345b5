"""Chapter 11 exercises: the majority vote, best-of-N selection, step labels of a response, and how a process reward
model's step scores become one score."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import torch

from llmcourse import inference, prm
from llmcourse import taskworld as tw
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register

# --------------------------------------------------------------------------- 11.1 the majority vote


def _vote_cases(rng: np.random.Generator) -> list[dict]:
    fixed = [["12", "13", "13", None, "12"],              # a tie: "12" appears first
             [None, None, "7"],                           # more responses without an answer than with one
             [None, None],                                # no answer at all
             ["9", "12", "12", "9"],                      # a tie: the first is not the smallest ("12" < "9")
             ["5", "6", "5", "6"],                        # a tie: the first is not the one seen last
             ["3", "8", "8", None],                       # the first answer is not the most common
             ["432", "73 0+63", "432"],                   # what the model writes between the tags, whatever it is
             ["5"]]
    cases = [dict(answers=a) for a in fixed]
    for _ in range(4):
        pool = [str(x) for x in rng.choice(np.arange(90, 130), size=4, replace=False)] + [None]
        n = int(rng.integers(4, 17))
        cases.append(dict(answers=[pool[i] for i in rng.choice(5, size=n, p=[0.3, 0.25, 0.2, 0.1, 0.15])]))
    return cases


def _vote_none_counted(answers):
    return Counter(answers).most_common(1)[0][0]                      # None is an answer like any other


def _vote_ties_last(answers):
    counts = Counter(a for a in reversed(answers) if a is not None)   # the last appearance comes first
    return counts.most_common(1)[0][0] if counts else None


def _vote_ties_smallest(answers):
    counts = Counter(a for a in answers if a is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))   # by count, then alphabetically
    return ranked[0][0] if ranked else None


def _vote_count(answers):
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][1] if counts else None


def _vote_first(answers):
    return next((a for a in answers if a is not None), None)          # no vote: the first answer given


def _vote_empty_string(answers):
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else ""


def _vote_removes_none(answers):
    while None in answers:
        answers.remove(None)                                          # the caller's list loses its Nones
    return Counter(answers).most_common(1)[0][0] if answers else None


def _vote_counter(answers):
    counts = Counter(a for a in answers if a is not None)             # most_common keeps first-seen order on ties
    return counts.most_common(1)[0][0] if counts else None


def _vote_max_get(answers):
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return max(counts, key=counts.get) if counts else None


# --------------------------------------------------------------------------- 11.2 best-of-N selection


def _bon_cases(rng: np.random.Generator) -> list[dict]:
    t = torch.tensor
    cases = [dict(scores=t([[0.1, 0.9, 0.9, 2.0], [1.0, 0.0, 1.0, 1.0]]), n=3),        # ties; the best is past n
             dict(scores=t([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
                            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]), n=4),                      # the rules: 0 or 1
             dict(scores=t([[-1.5, 3.2, 0.4], [2.0, -0.5, 2.5], [0.3, 0.2, 0.1], [1.0, 4.0, 0.0]]), n=1),
             dict(scores=t([[-1.5, 3.2, 0.4, 3.3], [2.0, -0.5, 2.5, 2.5]]), n=4)]
    for _ in range(3):
        P, K = int(rng.integers(3, 7)), int(rng.choice([4, 8]))
        n = int(rng.choice([k for k in (2, 4, 8) if k < K] + [K]))
        s = np.round(rng.normal(0, 2, (P, K)), 1).astype(np.float32)                     # rounded: some ties
        s[0, 1] = s[0, 0]
        s[1, -1] = s[1].max() + 1.0                                                       # the best one past n
        cases.append(dict(scores=torch.from_numpy(s), n=n))
    return cases


def _bon_argmin(scores, n):
    return scores[:, :n].argmin(dim=1)


def _bon_all_samples(scores, n):
    return scores.argmax(dim=1)                                       # every sample, not the first n


def _bon_ties_last(scores, n):
    return n - 1 - scores[:, :n].flip(1).argmax(dim=1)                # the last of the tied


def _bon_best_score(scores, n):
    return scores[:, :n].max(dim=1).values                            # the score, not which sample


def _bon_wrong_dim(scores, n):
    return scores[:, :n].argmax(dim=0)                                # over the problems


def _bon_flat_row(scores, n):
    P, K = scores.shape
    return scores[:, :n].argmax(dim=1) + torch.arange(P) * K          # the row of the prompt-major batch


def _bon_masks_in_place(scores, n):
    scores[:, n:] = float("-inf")                                     # the caller's scores overwritten
    return scores.argmax(dim=1)


def _bon_max_indices(scores, n):
    return torch.max(scores[:, :n], dim=1).indices


def _bon_loop(scores, n):
    out = []
    for row in scores.tolist():
        best = 0
        for j in range(1, n):
            if row[j] > row[best]:
                best = j
        out.append(best)
    return torch.tensor(out, dtype=torch.long)


# --------------------------------------------------------------------------- 11.3 step labels


def _steps_of(p: tw.Problem) -> list[str]:
    return tw.reasoning(p).split(",")


def _reasoned(steps: list[str], answer) -> str:
    return f"{tw.THINK}{','.join(steps)}{tw.END_THINK}{tw.ANSWER}{answer}{tw.END_ANSWER}"


def _corruptions(p: tw.Problem, rng: np.random.Generator) -> list[str]:
    """Realistic responses to ``p``: right, a wrong sum, a miscopied operand (the arithmetic as written holds), two
    steps swapped, a step missing, an extra step, a wrong answer after right steps, and bare answers."""
    steps, answer = _steps_of(p), p.answer
    k = int(rng.integers(len(steps)))
    lhs, s = steps[k].split("=")
    wrong_sum = steps[:k] + [f"{lhs}={int(s) + 1}"] + steps[k + 1:]
    x, rest = lhs.split("+", 1)
    miscopied = steps[:k] + [f"{(int(x) + 1) % 10}+{rest}={sum(map(int, f'{(int(x) + 1) % 10}+{rest}'.split('+')))}"] \
        + steps[k + 1:]
    out = [_reasoned(steps, answer), _reasoned(wrong_sum, answer + 10 ** k), _reasoned(miscopied, answer),
           _reasoned(steps, answer + 1), tw.bare_response(p), f"{tw.ANSWER}{answer + 7}{tw.END_ANSWER}",
           _reasoned(steps + ["0+0=0"], answer), _reasoned(steps, answer) + tw.EOS]
    if len(steps) > 1:
        out += [_reasoned(steps[::-1], answer), _reasoned(steps[:-1], answer), _reasoned(steps[:-1], answer % 10)]
    return out


def _label_cases(rng: np.random.Generator) -> list[dict]:
    p, q = tw.Problem(47, 385), tw.Problem(59, 67)          # 7+5=12,4+8+1=13,0+3+1=4 ; 9+7=16,5+6+1=12
    fixed = [("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>", p),
             ("<think>7+5=12,4+8+1=12,0+3+1=4</think><answer>422</answer>", p),     # the second sum is wrong
             ("<think>7+5=12,4+8+1=12,0+3+1=4</think><answer>432</answer>", p),     # ... and yet the answer is right
             ("<think>7+5=12,4+7+1=12,0+3+1=4</think><answer>422</answer>", p),     # a miscopied operand
             ("<think>7+5=12,4+8+1=13</think><answer>432</answer>", p),             # a column sum missing
             ("<think>9+7=16,5+7+1=13</think><answer>136</answer>", q),
             ("<answer>126</answer>", q), ("<answer>125</answer><|endoftext|>", q),
             ("<think>5+6+1=12,9+7=16</think><answer>126</answer>", q),             # the right sums, swapped
             ("<think>7+5=12,8+4+1=13,0+3+1=4</think><answer>432</answer>", p),     # the right total, operands swapped
             ("<think>7+5=12,4+8+1=13,0+3+1=4,<answer>432</answer>", p)]            # reasoning never closed
    cases = [dict(response_text=t, problem=pp) for t, pp in fixed]
    for _ in range(2):
        pp = tw.sample_problems(1, seed=int(rng.integers(1 << 30)))[0]
        texts = _corruptions(pp, rng)
        for i in rng.choice(len(texts), size=5, replace=False):
            cases.append(dict(response_text=texts[int(i)], problem=pp))
    return cases


def _split(text):
    """(column sums, reasoned?) as a regex over <think>…</think> reads them (an unclosed reasoning reads as none)."""
    text = tw.strip_eos(text)
    m = re.search(r"<think>(.*?)</think>", text)
    return (m.group(1).split(",") if m else []), m is not None


def _labels_alone(response_text, problem):
    written, reasoned = _split(response_text)
    true = _steps_of(problem)
    labels = [i < len(true) and s == true[i] for i, s in enumerate(written)]          # each step on its own
    complete = not reasoned or len(written) == len(true)
    return labels + [complete and tw.is_correct(response_text, problem)]


def _labels_answer_by_rules(response_text, problem):
    labels = prm.step_labels(response_text, problem)
    return labels[:-1] + [tw.is_correct(response_text, problem)]                       # the answer on its own


def _labels_missing_ignored(response_text, problem):
    written, _ = _split(response_text)
    true, labels, ok = _steps_of(problem), [], True
    for i, s in enumerate(written):
        ok = ok and i < len(true) and s == true[i]
        labels.append(ok)
    return labels + [ok and tw.is_correct(response_text, problem)]                     # no check that none is missing


def _labels_no_answer_step(response_text, problem):
    return prm.step_labels(response_text, problem)[:-1]


def _arithmetic_holds(step: str) -> bool:
    m = re.fullmatch(r"(\d+(?:\+\d+)*)=(\d+)", step)
    return m is not None and sum(map(int, m.group(1).split("+"))) == int(m.group(2))


def _labels_arithmetic(response_text, problem):
    written, reasoned = _split(response_text)
    labels, ok = [], True
    for s in written:
        ok = ok and _arithmetic_holds(s)                                                # the sum as written, any digits
        labels.append(ok)
    complete = not reasoned or len(written) == len(_steps_of(problem))
    return labels + [ok and complete and tw.is_correct(response_text, problem)]


def _labels_sum_only(response_text, problem):
    written, reasoned = _split(response_text)
    true, labels, ok = _steps_of(problem), [], True
    for i, s in enumerate(written):
        ok = ok and i < len(true) and s.split("=")[-1] == true[i].split("=")[-1]       # only the total compared
        labels.append(ok)
    complete = not reasoned or len(written) == len(true)
    return labels + [ok and complete and tw.is_correct(response_text, problem)]


def _labels_closed_ignored(response_text, problem):
    text = tw.strip_eos(response_text)
    written, _ = prm.column_steps(text)                                                 # the closed flag dropped
    true, labels, ok = _steps_of(problem), [], True
    for i, s in enumerate(written):
        ok = ok and i < len(true) and s == true[i]
        labels.append(ok)
    complete = not tw.is_reasoned(text) or len(written) == len(true)
    return labels + [ok and complete and tw.is_correct(text, problem)]


def _labels_any_position(response_text, problem):
    written, reasoned = _split(response_text)
    true, labels, ok = _steps_of(problem), [], True
    for s in written:
        ok = ok and s in true                                                           # a true step, but anywhere
        labels.append(ok)
    complete = not reasoned or len(written) == len(true)
    return labels + [ok and complete and tw.is_correct(response_text, problem)]


def _labels_only_first(response_text, problem):
    labels = prm.step_labels(response_text, problem)
    if False in labels:
        first = labels.index(False)
        labels = [True] * len(labels)
        labels[first] = False                                                           # the later ones left right
    return labels


def _labels_whole_text(response_text, problem):
    ideal = tw.response(problem, tw.REASONED if tw.is_reasoned(response_text) else tw.BARE)
    text = tw.strip_eos(response_text)
    steps, _ = prm.column_steps(text)
    ideal_steps = _steps_of(problem)
    out, ok = [], True
    for i, s in enumerate(steps):                                     # prefix of the ideal response, step by step
        ok = ok and ",".join(steps[:i + 1]) == ",".join(ideal_steps[:i + 1])
        out.append(ok)
    return out + [text == ideal]


# --------------------------------------------------------------------------- 11.4 aggregating step scores


def _agg_cases(rng: np.random.Generator) -> list[dict]:
    scores = torch.tensor([[0.75, 0.5, 1.0], [0.5, 0.25, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    cases = [dict(scores=scores, mask=mask, how=how) for how in prm.AGGREGATIONS]
    one = dict(scores=torch.tensor([[0.9, 0.05, 0.3], [0.2, 0.7, 0.8]]),
               mask=torch.tensor([[True, False, False], [True, True, True]]))             # a bare answer: one step
    cases += [dict(one, how=how) for how in prm.AGGREGATIONS]
    for how in prm.AGGREGATIONS:
        B, S = int(rng.integers(3, 7)), int(rng.integers(3, 6))
        lengths = rng.integers(1, S + 1, B)
        lengths[0] = S
        mask = torch.arange(S)[None, :] < torch.from_numpy(lengths)[:, None]
        s = rng.uniform(0.2, 1.0, (B, S)).astype(np.float32)
        pad = rng.uniform(0.0, 0.15, (B, S)).astype(np.float32)
        pad[:, -1] = 0.0                                                                  # padding: small, some 0
        cases.append(dict(scores=torch.where(mask, torch.from_numpy(s), torch.from_numpy(pad)), mask=mask, how=how))
    return cases


def _agg_padding_in_min(scores, mask, how="min"):
    if how == "min":
        return scores.min(dim=1).values                               # the padding takes part
    return prm.aggregate_steps(scores, mask, how)


def _agg_padding_in_product(scores, mask, how="min"):
    if how == "product":
        return scores.prod(dim=1)
    return prm.aggregate_steps(scores, mask, how)


def _agg_multiplied_mask(scores, mask, how="min"):
    kept = scores * mask                                              # padding becomes 0, not neutral
    if how == "min":
        return kept.min(dim=1).values
    if how == "product":
        return kept.prod(dim=1)
    return prm.aggregate_steps(scores, mask, how)


def _agg_last_column(scores, mask, how="min"):
    if how == "last":
        return scores[:, -1]
    return prm.aggregate_steps(scores, mask, how)


def _agg_first_step(scores, mask, how="min"):
    if how == "last":
        return scores[:, 0]
    return prm.aggregate_steps(scores, mask, how)


def _agg_mean_for_product(scores, mask, how="min"):
    if how == "product":
        return (scores * mask).sum(dim=1) / mask.sum(dim=1)           # the mean step score
    return prm.aggregate_steps(scores, mask, how)


def _agg_max_for_min(scores, mask, how="min"):
    if how == "min":
        return torch.where(mask, scores, torch.zeros_like(scores)).max(dim=1).values
    return prm.aggregate_steps(scores, mask, how)


def _agg_log_product(scores, mask, how="min"):
    if how == "product":
        return torch.where(mask, scores.log(), torch.zeros_like(scores)).sum(dim=1)   # exp forgotten
    return prm.aggregate_steps(scores, mask, how)


def _agg_in_place(scores, mask, how="min"):
    scores[~mask] = 1.0                                               # the caller's padding overwritten
    return prm.aggregate_steps(scores, mask, how)


def _agg_log_space(scores, mask, how="min"):
    if how == "product":
        return torch.exp(torch.where(mask, scores.log(), torch.zeros_like(scores)).sum(dim=1))
    if how == "min":
        return scores.masked_fill(~mask, math.inf).amin(dim=1)
    return prm.aggregate_steps(scores, mask, how)


def _agg_loop(scores, mask, how="min"):
    out = []
    for row, keep in zip(scores, mask):
        steps = row[keep]
        out.append(steps.min() if how == "min" else steps.prod() if how == "product" else steps[-1])
    return torch.stack(out)


# --------------------------------------------------------------------------- registry

register(
    Exercise(
        id="11.1", title="The majority vote", reference=inference.majority_vote, cases=_vote_cases,
        none_is_an_answer=True,
        hint="Count the answers that are not None (a dict, or collections.Counter), find the largest count, and "
             "return the first answer of `answers` that has it; None when no response has an answer.",
        known_wrong=[
            KnownWrong("None counted as an answer", _vote_none_counted,
                       "You counted None like an answer, so when most responses have no answer the vote returns None. "
                       "A response without an answer casts no vote: leave the Nones out, and return None only when "
                       "no response has an answer."),
            KnownWrong("ties to the last", _vote_ties_last,
                       "On a tie you returned the tied answer that appears last. The rule here is the one that "
                       "appears first in `answers` (it makes the vote of N samples start from the first ones)."),
            KnownWrong("ties to the smallest", _vote_ties_smallest,
                       "You broke ties by sorting the answers (alphabetically: '12' < '9'). The rule here is the tied "
                       "answer that appears first in `answers`: a dict, or Counter.most_common, keeps that order."),
            KnownWrong("the count, not the answer", _vote_count,
                       "You returned how many votes the winner got. Return the winning answer itself (a string)."),
            KnownWrong("no vote: the first answer", _vote_first,
                       "You returned the first answer given, which is one sample, not a vote. Count how often each "
                       "answer appears and return the most common one."),
            KnownWrong("empty string when no answer", _vote_empty_string,
                       "When no response has an answer, return None (no answer), not an empty string: '' would be "
                       "compared with the right answer as if the model had written it."),
            KnownWrong("Nones removed in place", _vote_removes_none,
                       "The vote is right, but you removed the Nones from the caller's list (`answers.remove`): the "
                       "caller still needs every response's answer. Build a new list, or skip the Nones as you count."),
        ],
        known_right=[KnownRight("Counter.most_common", _vote_counter), KnownRight("max with counts.get", _vote_max_get)]),
    Exercise(
        id="11.2", title="Best-of-N selection", reference=inference.best_of_n, cases=_bon_cases,
        hint="Take the first n columns of `scores` and return the index of each row's highest score: "
             "scores[:, :n].argmax(dim=1) (torch.argmax returns the first of tied maxima), a (P,) long tensor.",
        known_wrong=[
            KnownWrong("argmin", _bon_argmin,
                       "You picked the lowest score. The verifier's score says how good a response is: pick the "
                       "highest (argmax)."),
            KnownWrong("all K samples", _bon_all_samples,
                       "You chose among all K samples of a row. Best-of-n has only the first n: `scores[:, :n]`. (The "
                       "chapter draws K samples once and reads best-of-n for every n ≤ K from them.)"),
            KnownWrong("ties to the last", _bon_ties_last,
                       "On a tie you picked the last of the tied samples. The rule here is the first (what "
                       "torch.argmax does): with the rules as the verifier (scores 0 or 1), every right sample ties."),
            KnownWrong("the score, not the index", _bon_best_score,
                       "You returned the best score. Return *which* sample it is (its index in [0, n)), so that its "
                       "answer can be read."),
            KnownWrong("argmax over the problems", _bon_wrong_dim,
                       "You took argmax over dim 0, across problems. Each row is one problem's samples: compare "
                       "within a row, dim=1, one index per problem."),
            KnownWrong("index in the flat batch", _bon_flat_row,
                       "You returned the row of the prompt-major batch (i·K + j). Return the index j within the "
                       "problem's samples, in [0, n)."),
            KnownWrong("scores changed in place", _bon_masks_in_place,
                       "The choice is right, but you wrote −inf over the caller's scores past n (`scores[:, n:] = …`): "
                       "the chapter reads best-of-N for several N from the same scores. Slice instead: scores[:, :n]."),
        ],
        known_right=[KnownRight("torch.max(...).indices", _bon_max_indices), KnownRight("a Python loop", _bon_loop)]),
    Exercise(
        id="11.3", title="Step labels from a response", reference=prm.step_labels, cases=_label_cases,
        hint="Take the column sums between <think> and </think> (split on ','), compare sum i with "
             "taskworld.reasoning(problem).split(',')[i]; once one is wrong, all later steps are wrong. Then add the "
             "answer step: right when taskworld.is_correct says so, every step before it is right and, for a reasoned "
             "response, no column sum is missing. A bare response has the answer step alone.",
        known_wrong=[
            KnownWrong("each step on its own", _labels_alone,
                       "You judged every step on its own, so a step after a wrong one can be right. Here a wrong step "
                       "makes every later step wrong (PRM800K's convention: the reasoning has gone off the rails "
                       "there): keep a flag that, once False, stays False."),
            KnownWrong("the answer by the rules alone", _labels_answer_by_rules,
                       "You labelled the answer step by the rules alone. A right answer after a wrong column sum, or "
                       "after a missing one, is right by luck: the answer step is right only when every step before "
                       "it is right."),
            KnownWrong("a missing column sum not noticed", _labels_missing_ignored,
                       "A reasoned response that stops its column sums early (fewer than the problem has columns) "
                       "has skipped a step: its answer step is wrong even when the answer is right."),
            KnownWrong("no answer step", _labels_no_answer_step,
                       "You returned the column sums only. The answer is a step too, the last one (a bare response "
                       "has it alone): one label per step, S = column sums + 1."),
            KnownWrong("the arithmetic as written", _labels_arithmetic,
                       "You checked that each sum holds as written (4+7+1=12). A step can add right and still be "
                       "wrong: a digit miscopied from the problem, or the wrong carry. Compare it with the true step "
                       "at the same position, taskworld.reasoning(problem).split(',')[i]."),
            KnownWrong("a true step at any position", _labels_any_position,
                       "You accepted a column sum that appears anywhere among the true ones. Step i must be the true "
                       "step i: the columns go from the right, one after the other."),
            KnownWrong("only the total compared", _labels_sum_only,
                       "You compared only the total after '=' with the true step's. A step is right when it is written "
                       "exactly as the true one: '8+4+1=13' for '4+8+1=13' has the right total and the operands in the "
                       "wrong order (the model read the wrong digits). Compare the whole step: s == true[i]."),
            KnownWrong("an unclosed reasoning accepted", _labels_closed_ignored,
                       "A reasoning that is never closed by </think> is incomplete: column_steps returns closed=False, "
                       "and then the answer step is wrong even when the answer is right (the response skipped the "
                       "step that ends the reasoning). Use the flag: complete = closed and len(written) == len(true)."),
            KnownWrong("only the first wrong step", _labels_only_first,
                       "You marked only the first wrong step. Every step after it is wrong too: the reasoning built "
                       "on a wrong step is wrong."),
        ],
        known_right=[KnownRight("whole prefixes of the ideal response", _labels_whole_text)]),
    Exercise(
        id="11.4", title="One score from the step scores", reference=prm.aggregate_steps, cases=_agg_cases,
        hint="Only the steps where mask is True count (padding sits after them). 'min': the smallest kept score "
             "(torch.where(mask, scores, 1) keeps padding out); 'product': the product of the kept scores; 'last': "
             "the score at index mask.sum(dim=1) − 1 of each row.",
        known_wrong=[
            KnownWrong("padding in the min", _agg_padding_in_min,
                       "Your 'min' takes the padding into account, whose scores are anything (often small). Replace "
                       "them by 1 (torch.where(mask, scores, 1)) before the min, so they are never the smallest."),
            KnownWrong("padding in the product", _agg_padding_in_product,
                       "Your 'product' multiplies the padding's scores in. Replace them by 1, the neutral factor "
                       "(torch.where(mask, scores, 1)), before .prod(dim=1)."),
            KnownWrong("mask multiplied in", _agg_multiplied_mask,
                       "You multiplied the scores by the mask, which sets the padding to 0: then the min and the "
                       "product of every padded row are 0. Padding must be neutral: 1 for min and product."),
            KnownWrong("the last column", _agg_last_column,
                       "Your 'last' reads the last column, which is padding for every response with fewer steps than "
                       "the longest. The last step of row b is at index mask[b].sum() − 1."),
            KnownWrong("the first step", _agg_first_step,
                       "Your 'last' reads the first step. The last step of row b is at index mask[b].sum() − 1 (for "
                       "a reasoned response, its answer)."),
            KnownWrong("mean for product", _agg_mean_for_product,
                       "Your 'product' is the mean of the step scores. The product is the probability that every "
                       "step is right (if they were independent): one doubtful step pulls it down, as it should."),
            KnownWrong("max for min", _agg_max_for_min,
                       "Your 'min' takes the largest step score. A chain is as good as its weakest link: the smallest."),
            KnownWrong("log of the product", _agg_log_product,
                       "Your 'product' is the sum of the log scores, the log of the product: take its exp, or "
                       "multiply directly (the result is a probability, in [0, 1])."),
            KnownWrong("padding overwritten in place", _agg_in_place,
                       "The values are right, but you wrote 1 over the padding of the caller's `scores` "
                       "(`scores[~mask] = 1`). Use torch.where(mask, scores, 1), a new tensor."),
        ],
        known_right=[KnownRight("log space, masked_fill", _agg_log_space), KnownRight("row by row", _agg_loop),
                     KnownRight("float64", as_float64(prm.aggregate_steps))],
        atol=1e-6),
)
