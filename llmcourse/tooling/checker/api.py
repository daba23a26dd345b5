"""The notebook's side: ``name = check("N.k", name)`` and ``reference("N.k")``."""

from __future__ import annotations

import re
import sys
from typing import Callable

from llmcourse.tooling.checker.registry import get_exercise
from llmcourse.tooling.checker.run import NOT_ATTEMPTED, PASSED, WRONG, CheckResult, run_check


class ExerciseWrong(Exception):
    """Raised by `check` when an answer is wrong. Shown in a notebook without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of printing a traceback
        return [str(self)]


def _report(result: CheckResult, name: str = "name", rebound: bool = False) -> str:
    ex = result.exercise
    printed = result.printed.strip()
    note = f"\n  (your function printed {len(printed.splitlines())} line(s) during the check; hidden here)" if printed else ""
    if result.status == PASSED:
        return f"✅ Exercise {ex.id} ({ex.title}): passed on {result.n_cases} cases.{note}"
    if result.status == NOT_ATTEMPTED:
        return (f"⏳ Exercise {ex.id} ({ex.title}): not attempted yet. "
                f"The cells below use the reference implementation for now.")
    if rebound:
        after = (f"  For now `{name}` is the reference implementation, so the cells below still run (\"Run All\" stops "
                 f"at this cell: run on from the next one). Fix your function above and re-run this cell to use your own.")
    else:
        after = f"  To move on for now, use the reference: `{name} = reference(\"{ex.id}\")`."
    return (f"❌ Exercise {ex.id} ({ex.title}) is not right yet: {result.message}\n"
            f"  hint: {result.hint}{note}\n{after}")


_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(?:llmcourse\.)?check\s*\(")


def _assigned_name(frame) -> str | None:
    """The name in ``name = check(...)`` on the caller's line, if the call is written that way."""
    import linecache

    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
    m = _ASSIGNMENT.match(line)
    return m.group(1) if m else None


def check(exercise_id: str, fn: Callable, seed: int | None = None) -> Callable:
    """Check the learner's ``fn`` for exercise ``exercise_id``; return the function to use next.

    Passed: prints ✅ and returns ``fn``. Not attempted: prints ⏳ and returns the reference.
    Wrong: binds the caller's name (``name = check(...)``) to the reference, so the cells below
    still run, and raises `ExerciseWrong` with the failing input, expected vs received, and a hint.
    ``seed``: re-run the fixed cases and the random cases of this seed (the message of a failing
    random case gives it).
    """
    ex = get_exercise(exercise_id)
    result = run_check(ex, fn, seeds=None if seed is None else [0, seed])
    caller = sys._getframe(1)
    name = _assigned_name(caller) or getattr(fn, "__name__", "")
    if not name.isidentifier() or name == "<lambda>":
        name = "name"
    if result.status == WRONG:
        rebound = caller.f_code.co_name == "<module>" and name != "name"
        if rebound:  # at the top level of a cell: the notebook's name now holds the reference
            caller.f_globals[name] = ex.reference
        raise ExerciseWrong(_report(result, name, rebound))
    print(_report(result, name))
    return fn if result.status == PASSED else ex.reference


def reference(exercise_id: str) -> Callable:
    """The reference implementation of an exercise, e.g. to move on when stuck."""
    return get_exercise(exercise_id).reference
