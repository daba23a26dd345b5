"""Chapter 12 exercises: the filter of rejection-sampling fine-tuning (right, well-formed, distinct, at most m)."""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby

import numpy as np

from llmcourse import rejection_sampling as rs
from llmcourse import taskworld as tw
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, register

# --------------------------------------------------------------------------- 12.1 the filter


def _reasoned(steps: str, answer) -> str:
    return f"{tw.THINK}{steps}{tw.END_THINK}{tw.ANSWER}{answer}{tw.END_ANSWER}"


def _pool(p: tw.Problem, rng: np.random.Generator) -> dict[str, str]:
    """Responses to ``p`` a model writes, by kind: the ideal one (with and without EOS), right ones with other
    reasoning (a slip in a step, a missing carry), right but bare, wrong ones, malformed ones."""
    steps = tw.reasoning(p)
    first, _, rest = steps.partition(",")
    lhs, total = first.split("=")
    slip = ",".join([f"{lhs}={int(total) + 1}"] + ([rest] if rest else []))          # a wrong step, right answer
    return {"ideal": tw.response(p), "ideal+eos": tw.response(p) + tw.EOS,
            "slip": _reasoned(slip, p.answer), "short": _reasoned(first, p.answer),
            "bare right": tw.bare_response(p), "bare right+eos": tw.bare_response(p) + tw.EOS,
            "bare wrong": f"{tw.ANSWER}{p.answer + int(rng.integers(1, 9))}{tw.END_ANSWER}",
            "wrong": _reasoned(steps, p.answer + 10), "wrong+eos": _reasoned(steps, p.answer + 1) + tw.EOS,
            "no close": f"{tw.THINK}{steps}{tw.ANSWER}{p.answer}{tw.END_ANSWER}",
            "cut": f"{tw.THINK}{steps}{tw.END_THINK}{tw.ANSWER}{p.answer}",
            "junk": _reasoned("1+1=2", p.answer)}                                       # right answer, useless steps


def _filter_cases(rng: np.random.Generator) -> list[dict]:
    p, q, s = tw.Problem(47, 385), tw.Problem(32, 400), tw.Problem(5, 9)               # p and q: both 432
    P, Q, S = (_pool(x, np.random.default_rng(0)) for x in (p, q, s))
    fixed = [
        # one problem: bare right (rejected), ideal, ideal + EOS (a duplicate), wrong, a slip, another one past m
        ([P["bare right"], P["ideal"], P["ideal+eos"], P["wrong"], P["slip"], P["short"]], [p] * 6, 2),
        # the same text is right for p and for q: one example each; q's rows after p's
        ([P["junk"], P["ideal"], P["junk"], Q["junk"], Q["ideal"], Q["junk"], Q["slip"]], [p, p, p, q, q, q, q], 2),
        # interleaved rows (not prompt-major): grouped by problem, not by position; the m-th of s comes last
        ([S["ideal"], P["ideal"], S["ideal+eos"], Q["bare right"], P["slip"], S["slip"], P["short"], S["short"],
          Q["ideal"], S["junk"]], [s, p, s, q, p, s, p, s, q, s], 2),
        # m = 1: the first right one of each problem, even when a better-looking one follows
        ([P["slip"], P["ideal"], S["wrong+eos"], S["ideal+eos"], S["ideal"], Q["no close"], Q["cut"], Q["ideal+eos"]],
         [p, p, s, s, s, q, q, q], 1),
        # nothing right and well-formed
        ([P["bare right"], P["wrong"], P["no close"], P["cut"], S["bare right+eos"], S["bare wrong"]],
         [p, p, p, p, s, s], 3),
        # more right than m, and duplicates among them
        ([S["ideal"], S["ideal"], S["slip"], S["ideal+eos"], S["short"], S["junk"], S["slip"], P["ideal"]],
         [s] * 7 + [p], 3),
    ]
    cases = [dict(texts=t, problems=ps, max_per_problem=m) for t, ps, m in fixed]
    kinds = list(_pool(p, rng))
    weights = np.array([4, 2, 2, 1, 4, 1, 2, 2, 1, 1, 1, 1], dtype=float)
    for shuffle in (False, False, True):
        base = tw.sample_problems(int(rng.integers(3, 6)), seed=int(rng.integers(1 << 30)))
        problems = base + [tw.Problem(base[0].b, base[0].a)]                         # the same sum as base[0]
        texts, rows = [], []
        for x in problems:
            pool = _pool(x, rng)
            k = int(rng.integers(4, 9))
            for kind in rng.choice(kinds, size=k, p=weights / weights.sum()):
                texts.append(pool[str(kind)])
                rows.append(x)
        if shuffle:
            order = rng.permutation(len(texts))
            texts, rows = [texts[i] for i in order], [rows[i] for i in order]
        cases.append(dict(texts=texts, problems=rows, max_per_problem=int(rng.integers(1, 4))))
    return cases


def _accepted(text, problem):
    return tw.is_correct(text, problem) and tw.format_ok(text)


def _filter_with(texts, problems, m, accept=_accepted, key=tw.strip_eos):
    kept, seen = [], defaultdict(set)
    for i, (t, p) in enumerate(zip(texts, problems)):
        if accept(t, p) and key(t) not in seen[p] and len(seen[p]) < m:
            seen[p].add(key(t))
            kept.append(i)
    return kept


def _rs_bare_kept(texts, problems, max_per_problem):
    return _filter_with(texts, problems, max_per_problem, accept=tw.is_correct)      # right, in any format


def _rs_format_only(texts, problems, max_per_problem):
    return _filter_with(texts, problems, max_per_problem, accept=lambda t, p: tw.format_ok(t))


def _rs_no_dedup(texts, problems, max_per_problem):
    kept, count = [], defaultdict(int)
    for i, (t, p) in enumerate(zip(texts, problems)):
        if _accepted(t, p) and count[p] < max_per_problem:
            count[p] += 1
            kept.append(i)
    return kept


def _rs_dedup_across(texts, problems, max_per_problem):
    kept, seen, count = [], set(), defaultdict(int)
    for i, (t, p) in enumerate(zip(texts, problems)):
        key = tw.strip_eos(t)
        if _accepted(t, p) and key not in seen and count[p] < max_per_problem:
            seen.add(key)                                        # one set for all problems
            count[p] += 1
            kept.append(i)
    return kept


def _rs_last_m(texts, problems, max_per_problem):
    n = len(texts)
    backwards = _filter_with(texts[::-1], problems[::-1], max_per_problem)
    return sorted(n - 1 - i for i in backwards)                  # the last distinct ones of each problem


def _rs_global_m(texts, problems, max_per_problem):
    kept, seen = [], defaultdict(set)
    for i, (t, p) in enumerate(zip(texts, problems)):
        if len(kept) >= max_per_problem:                          # m for the whole batch
            break
        if _accepted(t, p) and tw.strip_eos(t) not in seen[p]:
            seen[p].add(tw.strip_eos(t))
            kept.append(i)
    return kept


def _rs_texts(texts, problems, max_per_problem):
    return [texts[i] for i in rs.filter_samples(texts, problems, max_per_problem)]


def _rs_m_before_dedup(texts, problems, max_per_problem):
    first_right, count = [], defaultdict(int)
    for i, (t, p) in enumerate(zip(texts, problems)):
        if _accepted(t, p) and count[p] < max_per_problem:       # duplicates use up the m places
            count[p] += 1
            first_right.append(i)
    kept, seen = [], defaultdict(set)
    for i in first_right:
        key = tw.strip_eos(texts[i])
        if key not in seen[problems[i]]:
            seen[problems[i]].add(key)
            kept.append(i)
    return kept


def _rs_m_before_rules(texts, problems, max_per_problem):
    kept, count, seen = [], defaultdict(int), defaultdict(set)
    for i, (t, p) in enumerate(zip(texts, problems)):
        count[p] += 1
        if count[p] > max_per_problem:                           # the first m samples, whatever they are
            continue
        if _accepted(t, p) and tw.strip_eos(t) not in seen[p]:
            seen[p].add(tw.strip_eos(t))
            kept.append(i)
    return kept


def _rs_raw_text(texts, problems, max_per_problem):
    return _filter_with(texts, problems, max_per_problem, key=lambda t: t)   # "X" and "X<|endoftext|>" differ


def _rs_m_plus_one(texts, problems, max_per_problem):
    kept, seen = [], defaultdict(set)
    for i, (t, p) in enumerate(zip(texts, problems)):
        key = tw.strip_eos(t)
        if _accepted(t, p) and key not in seen[p] and len(seen[p]) <= max_per_problem:   # one too many
            seen[p].add(key)
            kept.append(i)
    return kept


def _rs_strips_in_place(texts, problems, max_per_problem):
    for i, t in enumerate(texts):
        texts[i] = tw.strip_eos(t)                               # the caller's texts lose their EOS
    return _filter_with(texts, problems, max_per_problem)


def _rs_contiguous(texts, problems, max_per_problem):
    kept, start = [], 0
    for _, run in groupby(problems):                             # each run of equal rows taken as the whole group
        n = len(list(run))
        kept += [start + i for i in _filter_with(texts[start:start + n], problems[start:start + n], max_per_problem)]
        start += n
    return kept


def _rs_by_problem_order(texts, problems, max_per_problem):
    rows = defaultdict(list)
    for i, p in enumerate(problems):
        rows[p].append(i)
    kept = []
    for p, idx in rows.items():                                  # problem after problem: not in row order
        kept += [idx[j] for j in _filter_with([texts[i] for i in idx], [p] * len(idx), max_per_problem)]
    return kept


def _rs_grouped_sorted(texts, problems, max_per_problem):
    return sorted(_rs_by_problem_order(texts, problems, max_per_problem))


def _rs_counter_dict(texts, problems, max_per_problem):
    kept_texts: dict[tw.Problem, list[str]] = {}
    out = []
    for i in range(len(texts)):
        text, problem = texts[i], problems[i]
        if not tw.format_ok(text) or tw.parse_answer(text) != str(problem.answer):
            continue
        mine = kept_texts.setdefault(problem, [])
        if len(mine) < max_per_problem and tw.strip_eos(text) not in mine:
            mine.append(tw.strip_eos(text))
            out.append(i)
    return out


def _rs_tuple(texts, problems, max_per_problem):
    return tuple(rs.filter_samples(texts, problems, max_per_problem))


register(
    Exercise(
        id="12.1", title="The rejection-sampling filter", reference=rs.filter_samples, cases=_filter_cases,
        hint="Go through the rows in order with a dict problem -> set of texts kept for it. Keep row i when "
             "tw.is_correct(texts[i], problems[i]) and tw.format_ok(texts[i]), its text without the EOS "
             "(tw.strip_eos) is not yet in that problem's set, and the set holds fewer than max_per_problem texts; "
             "then add the text to the set and i to the result. Return the list of kept row indices.",
        known_wrong=[
            KnownWrong("bare right answers kept", _rs_bare_kept,
                       "You kept right answers in any format, the bare ones too. The filter keeps what the rules "
                       "fully accept: right (tw.is_correct) *and* well-formed (tw.format_ok). Fine-tuning on bare "
                       "answers would teach the model to answer without reasoning, its weakness."),
            KnownWrong("the format alone", _rs_format_only,
                       "You checked only the format, so a well-formed response with a wrong answer is kept. Rejection "
                       "sampling rejects wrong answers: keep a row only when tw.is_correct(text, problem) too."),
            KnownWrong("no deduplication", _rs_no_dedup,
                       "You kept the same response several times for one problem. Keep distinct texts only (RFT "
                       "keeps distinct reasoning paths): remember the texts kept for each problem in a set and skip a "
                       "text already in it."),
            KnownWrong("deduplicated across problems", _rs_dedup_across,
                       "You removed duplicates across all problems with one set of texts. The same text can be a right "
                       "answer to two problems (47+385 and 32+400 both make 432): it is then two examples, with two "
                       "prompts. Keep one set of texts per problem."),
            KnownWrong("the last m", _rs_last_m,
                       "You kept the last max_per_problem distinct right responses of a problem. Keep the first ones, "
                       "in row order: go forward and stop taking a problem's rows once it has max_per_problem."),
            KnownWrong("m for the whole batch", _rs_global_m,
                       "You stopped after max_per_problem rows in all. The cap is per problem: count the kept texts "
                       "of each problem separately (len of its set), and go on through all the rows."),
            KnownWrong("texts, not row indices", _rs_texts,
                       "You returned the kept texts. Return their row indices (ints): the caller needs the rows to "
                       "build the SFT examples from the token ids (`examples_from_responses(responses, rows)`)."),
            KnownWrong("duplicates use up the m places", _rs_m_before_dedup,
                       "You took the first max_per_problem right rows of a problem and only then removed duplicates, "
                       "so a duplicate used up a place. Skip duplicates first: m counts distinct kept texts, and the "
                       "next distinct right one takes the free place."),
            KnownWrong("m before the rules", _rs_m_before_rules,
                       "You looked only at the first max_per_problem samples of each problem and filtered those. The "
                       "cap is on what is kept: go through every sample, and count only the rows you keep."),
            KnownWrong("the end-of-text token in the comparison", _rs_raw_text,
                       "You compared the texts with their end-of-text token, so 'X' and 'X<|endoftext|>' count as "
                       "two responses. They are one response (the EOS only ends it): compare tw.strip_eos(text)."),
            KnownWrong("m + 1 kept", _rs_m_plus_one,
                       "You keep max_per_problem + 1 texts of a problem when it has that many: the test is "
                       "len(kept for the problem) < max_per_problem before adding one (not <=)."),
            KnownWrong("texts changed in place", _rs_strips_in_place,
                       "The rows are right, but you wrote over the caller's `texts` (texts[i] = …): the caller still "
                       "needs them as they were. Compare tw.strip_eos(text) without storing it back."),
            KnownWrong("rows of a problem taken as contiguous", _rs_contiguous,
                       "You treated each run of equal neighbouring problems as the whole of a problem's rows, so when "
                       "a problem comes back later its duplicates and its cap start again. Rows need not be grouped: "
                       "key the kept texts by the problem itself (a dict), whatever the row's position."),
            KnownWrong("rows grouped by problem", _rs_by_problem_order,
                       "The kept rows are right, but you returned them problem by problem. Return them in increasing "
                       "row order (one pass over the rows, or sorted(...) at the end)."),
        ],
        known_right=[KnownRight("grouped, then sorted", _rs_grouped_sorted),
                     KnownRight("a dict of lists, parse_answer", _rs_counter_dict),
                     KnownRight("a tuple", _rs_tuple)]),
)
