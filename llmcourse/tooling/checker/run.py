"""Running a check: the learner's function on every case, compared with the reference, a known mistake recognised."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Callable

from llmcourse.tooling.checker.compare import _fmt, _format_case, _indent, _learner_frame, _sentence, _type_name
from llmcourse.tooling.checker.exercise import Exercise, KnownWrong, make_cases
from llmcourse.tooling.checker.limits import _call_with_time_limit, _Timeout
from llmcourse.tooling.checker.observe import _Observation, _observation_difference, _observations_agree, _observe

PASSED, NOT_ATTEMPTED, WRONG = "passed", "not attempted", "wrong"


@dataclass
class CheckResult:
    """What a check found. ``status`` is one of ``passed``, ``not attempted``, ``wrong``."""

    exercise: Exercise
    status: str
    message: str
    n_cases: int = 0
    mistake: KnownWrong | None = None
    """The known mistake whose observations matched the learner's, if any."""
    printed: str = ""
    """What the learner's function printed during the check (hidden from the report)."""
    seed: int | None = None
    """The seed of the failing case (None when it passed)."""

    @property
    def hint(self) -> str:
        return self.mistake.hint if self.mistake else self.exercise.hint


def _where_from(ex: Exercise, i: int, n: int, seed: int) -> str:
    if seed == 0:
        return f"case {i + 1} of {n}, a fixed case"
    return (f"case {i + 1} of {n}, drawn with seed {seed} (to re-run exactly these cases: "
            f"`check(\"{ex.id}\", your_function, seed={seed})`)")


def _run_learner(ex: Exercise, fn: Callable, case: dict, sink: io.StringIO) -> _Observation:
    with redirect_stdout(sink):
        return _call_with_time_limit(ex.timeout_s, lambda: _observe(ex, fn, case))


def _matches(ex: Exercise, fn: Callable, cases: list[dict], observations: list[_Observation]) -> bool:
    """Does ``fn`` behave as observed on every case? (Used to recognise a known mistake.)"""
    for case, obs in zip(cases, observations):
        try:
            mine = _run_learner(ex, fn, case, io.StringIO())
        except (Exception, _Timeout):  # noqa: BLE001 - a catalog entry that fails simply does not match
            return False
        if not _observations_agree(ex, mine, obs):
            return False
    return True


def run_check(ex: Exercise, fn: Callable, seeds: list[int] | None = None) -> CheckResult:
    """Check ``fn`` against ``ex``; never raises for anything the learner's code does."""
    if not callable(fn):
        return CheckResult(ex, WRONG, f"check expected a function, received {_type_name(fn)} {_fmt(fn, 80)}.")
    seeded = make_cases(ex, seeds)
    cases = [case for _, case in seeded]
    n = len(cases)
    sink = io.StringIO()
    received: list[_Observation] = []
    for i, (seed, case) in enumerate(seeded):
        try:
            received.append(_run_learner(ex, fn, case, sink))
        except NotImplementedError:
            return CheckResult(ex, NOT_ATTEMPTED, "", i, printed=sink.getvalue())
        except _Timeout:
            msg = (f"your function did not finish within {ex.timeout_s:g} s on {_where_from(ex, i, n, seed)}:\n"
                   f"{_format_case(case)}\n"
                   "  Is there a loop that never ends (a convergence test that can't be met, a counter never increased)?")
            return CheckResult(ex, WRONG, msg, i, printed=sink.getvalue(), seed=seed)
        except Exception as exc:  # noqa: BLE001 - the learner's error, reported in one paragraph
            where = _learner_frame(exc)
            if isinstance(exc, TypeError) and not where and "argument" in str(exc):
                where = (f"\n  The check calls your function with keyword arguments named as in the stub "
                         f"({', '.join(case)}): keep the stub's parameter names.")
            msg = (f"your function raised {type(exc).__name__}: {exc}{where}\n"
                   f"  on {_where_from(ex, i, n, seed)}:\n{_format_case(case)}")
            return CheckResult(ex, WRONG, msg, i, printed=sink.getvalue(), seed=seed)
    expected = [_observe(ex, ex.reference, case) for case in cases]
    diffs = [_observation_difference(ex, e, r) for e, r in zip(expected, received)]
    failing = [i for i, d in enumerate(diffs) if d is not None]
    if not failing:
        return CheckResult(ex, PASSED, "", n, printed=sink.getvalue())
    i = failing[0]
    seed, case = seeded[i]
    # Which known mistake explains the learner's observations? Prefer one that agrees on every
    # case; else one that agrees on every case the learner gets wrong. None: the general hint.
    mistake = next((kw for kw in ex.known_wrong if _matches(ex, kw.fn, cases, received)), None)
    if mistake is None:
        wrong_cases, wrong_obs = [cases[k] for k in failing], [received[k] for k in failing]
        mistake = next((kw for kw in ex.known_wrong if _matches(ex, kw.fn, wrong_cases, wrong_obs)), None)
    msg = (f"{_sentence(diffs[i])}\n  input, {_where_from(ex, i, n, seed)}:\n{_format_case(case)}\n"
           f"  expected: {_indent(_fmt(expected[i].value), ' ' * 12)}\n"
           f"  received: {_indent(_fmt(received[i].value), ' ' * 12)}")
    return CheckResult(ex, WRONG, msg, n, mistake=mistake, printed=sink.getvalue(), seed=seed)
