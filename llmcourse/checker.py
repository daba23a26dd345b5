"""On-the-spot checks for the course's exercises.

In a notebook, right after an exercise::

    discounted_return = check("1.1", discounted_return)

`check` runs the learner's function against the reference on fixed and randomized cases
and reports exactly one outcome:

* passed: returns the learner's function, so later cells run on the learner's own code;
* not attempted yet (the stub still raises ``NotImplementedError``): returns the reference
  and says so, so an unsolved notebook still runs end to end;
* wrong: shows the failing input, expected vs received (value, shape or dtype) and a hint
  naming the likely mistake, then raises `ExerciseWrong` so the cell fails
  (and ``pytest --nbval`` on the learner's copy flags it).

An exercise is an `Exercise`: its reference, a case generator and a catalog of
`KnownWrong` versions (the mistakes learners really make). When a learner's answer is
wrong, the catalog is searched for a mistake that reproduces the learner's output; its
hint is the one shown. The tests use the same catalog to prove that every check can fail.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import pkgutil
import signal
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

try:  # torch is a dependency, but the checker should not need it for NumPy exercises
    import torch
except ImportError:  # pragma: no cover
    torch = None

PASSED, NOT_ATTEMPTED, WRONG = "passed", "not attempted", "wrong"


@dataclass
class KnownWrong:
    """A mistake learners make, written out as a function with the reference's signature."""

    name: str
    """Short label, e.g. ``"no discount"``."""
    fn: Callable
    """The wrong implementation."""
    hint: str
    """What to tell a learner whose output matches this mistake."""


@dataclass
class Exercise:
    """One exercise: what the learner's function must agree with, and on which inputs."""

    id: str
    """``"chapter.k"``, e.g. ``"1.3"``; the notebook cell calls ``check(id, fn)``."""
    title: str
    """Short title, used in messages and in the generated stub."""
    reference: Callable
    """The reference implementation (lives in the package, named by concept)."""
    cases: Callable[[np.random.Generator], list[dict]]
    """Given a seeded generator, returns a list of keyword-argument dicts to call with."""
    hint: str
    """Fallback hint when the output matches no known mistake."""
    known_wrong: list[KnownWrong] = field(default_factory=list)
    """Catalog of common mistakes; each must be rejected (the tests prove it)."""
    atol: float = 1e-6
    """Absolute tolerance for floating-point outputs."""
    rtol: float = 1e-5
    """Relative tolerance for floating-point outputs."""
    call: Callable[[Callable, dict], Any] | None = None
    """How to run a function on a case; default ``fn(**case)``. Override for stateful APIs."""
    timeout_s: float = 20.0
    """Per-call time limit, to catch infinite loops (where the platform allows it)."""
    n_random_seeds: int = 2
    """Besides seed 0, how many fresh random seeds to draw cases from."""

    def run(self, fn: Callable, case: dict) -> Any:
        case = copy.deepcopy(case)  # a function that mutates its input must not poison the next call
        return self.call(fn, case) if self.call is not None else fn(**case)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    """Add exercises to the registry (called by the modules in ``llmcourse.exercises``)."""
    for ex in exercises:
        _REGISTRY[ex.id] = ex


def all_exercises() -> dict[str, Exercise]:
    """Every exercise of the course, by id (imports every ``llmcourse.exercises`` module)."""
    from llmcourse import exercises

    for mod in pkgutil.iter_modules(exercises.__path__):
        importlib.import_module(f"llmcourse.exercises.{mod.name}")
    return dict(sorted(_REGISTRY.items(), key=lambda kv: tuple(int(p) for p in kv[0].split("."))))


def get_exercise(exercise_id: str) -> Exercise:
    exercises = all_exercises()
    if exercise_id not in exercises:
        raise KeyError(f"No exercise {exercise_id!r}; known: {', '.join(exercises)}")
    return exercises[exercise_id]


def reference(exercise_id: str) -> Callable:
    """The reference implementation of an exercise, e.g. to move on when stuck."""
    return get_exercise(exercise_id).reference


# --------------------------------------------------------------------------- comparing


def _fmt(x: Any, limit: int = 600) -> str:
    """A short, readable rendering of a value for messages."""
    if torch is not None and isinstance(x, torch.Tensor):
        body = np.array2string(x.detach().cpu().numpy(), precision=4, threshold=60, edgeitems=3)
        s = f"tensor(shape={tuple(x.shape)}, dtype={x.dtype}) {body}"
    elif isinstance(x, np.ndarray):
        body = np.array2string(x, precision=4, threshold=60, edgeitems=3, suppress_small=True)
        s = f"array(shape={x.shape}, dtype={x.dtype}) {body}" if x.ndim else body
    elif isinstance(x, float):
        s = repr(x) if len(repr(x)) <= 10 else f"{x:.6g}"
    elif isinstance(x, dict) and len(x) > 4:
        head = ", ".join(f"{k!r}: {_fmt(v, 120)}" for k, v in list(x.items())[:2])
        s = f"{{{head}, … ({len(x)} entries)}}"
    elif isinstance(x, dict):
        s = "{" + ", ".join(f"{k!r}: {_fmt(v, 120)}" for k, v in x.items()) + "}"
    elif isinstance(x, (list, tuple)) and len(x) <= 12 and not _is_table(x):
        inner = ", ".join(_fmt(v, 120) for v in x)
        s = f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    else:
        s = repr(x)
    return s if len(s) <= limit else s[: limit - 5] + " …"


def _is_table(x: Any) -> bool:
    return bool(x) and isinstance(x[0], (list, tuple, dict))


def _indent(text: str, pad: str) -> str:
    return text.replace("\n", "\n" + pad)


def _format_case(case: dict) -> str:
    return "\n".join(f"    {k} = {_indent(_fmt(v), ' ' * (7 + len(k)))}" for k, v in case.items())


def _type_name(x: Any) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def _is_real_number(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, float, np.integer, np.floating)):
        return True
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iuf":
        return True
    if torch is not None and isinstance(x, torch.Tensor) and x.ndim == 0 and not x.dtype.is_complex:
        return x.dtype != torch.bool
    return False


def _where(path: str) -> str:
    return f" (at {path})" if path else ""


def describe_difference(expected: Any, received: Any, atol: float, rtol: float, path: str = "") -> str | None:
    """None when ``received`` matches ``expected``, else one sentence saying what differs.

    >>> describe_difference(1.0, 1.0 + 1e-9, 1e-6, 1e-6) is None
    True
    >>> describe_difference(np.zeros(3), np.zeros(4), 1e-6, 1e-6)
    'expected shape (3,), received shape (4,)'
    """
    if received is None and expected is not None:
        return f"your function returned None{_where(path)}: is a `return` statement missing?"

    # ---- torch tensors: type, shape, dtype, NaN, values
    if torch is not None and isinstance(expected, torch.Tensor):
        if not isinstance(received, torch.Tensor):
            return f"expected a torch.Tensor{_where(path)}, received {_type_name(received)}"
        if tuple(received.shape) != tuple(expected.shape):
            return f"expected shape {tuple(expected.shape)}{_where(path)}, received shape {tuple(received.shape)}"
        if received.dtype != expected.dtype:
            return f"expected dtype {expected.dtype}{_where(path)}, received dtype {received.dtype}"
        exp = expected.detach().cpu().to(torch.float64) if expected.is_floating_point() else expected.detach().cpu()
        rec = received.detach().cpu().to(torch.float64) if received.is_floating_point() else received.detach().cpu()
        return _compare_arrays(exp.numpy(), rec.numpy(), atol, rtol, path)

    # ---- NumPy arrays
    if isinstance(expected, np.ndarray):
        if not isinstance(received, np.ndarray):
            return f"expected a NumPy array of shape {expected.shape}{_where(path)}, received {_type_name(received)}"
        if received.shape != expected.shape:
            return f"expected shape {expected.shape}{_where(path)}, received shape {received.shape}"
        kinds = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "c": "complex"}
        ek, rk = kinds.get(expected.dtype.kind, "other"), kinds.get(received.dtype.kind, "other")
        if ek != rk:
            return f"expected {ek} entries (dtype {expected.dtype}){_where(path)}, received dtype {received.dtype}"
        return _compare_arrays(expected, received, atol, rtol, path)

    # ---- containers
    if isinstance(expected, dict):
        if not isinstance(received, dict):
            return f"expected a dict{_where(path)}, received {_type_name(received)}"
        if set(received) != set(expected):
            return f"expected keys {sorted(map(str, expected))}{_where(path)}, received keys {sorted(map(str, received))}"
        for k in expected:
            d = describe_difference(expected[k], received[k], atol, rtol, f"{path}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(received, (tuple, list)):
            return f"expected a {type(expected).__name__} of length {len(expected)}{_where(path)}, received {_type_name(received)}"
        if len(received) != len(expected):
            return f"expected {len(expected)} items{_where(path)}, received {len(received)}"
        for i, (e, r) in enumerate(zip(expected, received)):
            d = describe_difference(e, r, atol, rtol, f"{path}[{i}]")
            if d:
                return d
        return None

    # ---- scalars
    if isinstance(expected, (bool, np.bool_)):
        if not isinstance(received, (bool, np.bool_)):
            return f"expected True or False{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        return None if bool(received) == bool(expected) else f"expected {bool(expected)}{_where(path)}, received {bool(received)}"
    if isinstance(expected, (int, np.integer)):
        if not _is_real_number(received) or float(received) != int(received):
            return f"expected an integer{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        return None if int(received) == int(expected) else f"expected {int(expected)}{_where(path)}, received {int(received)}"
    if isinstance(expected, (float, np.floating)):
        if not _is_real_number(received):
            return f"expected a number{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        e, r = float(expected), float(received)
        if math.isnan(r) and not math.isnan(e):
            return f"your result is NaN{_where(path)}: look for a division by zero, a log of 0, or a softmax over a row that is all -inf (everything masked)"
        if math.isinf(r) and not math.isinf(e):
            return f"your result is infinite{_where(path)}: look for an overflow or a division by zero"
        if math.isclose(e, r, rel_tol=rtol, abs_tol=atol) or (math.isnan(e) and math.isnan(r)):
            return None
        return f"expected {e:.6g}{_where(path)}, received {r:.6g}"

    # ---- anything else: equality
    try:
        equal = bool(expected == received)
    except Exception:  # noqa: BLE001
        equal = False
    return None if equal else f"expected {_fmt(expected)}{_where(path)}, received {_fmt(received)}"


def _compare_arrays(expected: np.ndarray, received: np.ndarray, atol: float, rtol: float, path: str) -> str | None:
    if expected.dtype.kind == "f" or received.dtype.kind == "f":
        bad_nan = np.isnan(received) & ~np.isnan(expected)
        if bad_nan.any():
            idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
            return f"your result contains NaN{_where(path)}, first at index {idx}: look for a division by zero, a log of 0, or a softmax over a row that is all -inf (everything masked)"
        close = np.isclose(received, expected, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = received == expected
    if close.all():
        return None
    idx = tuple(int(i) for i in np.argwhere(~close)[0])
    n_bad = int((~close).sum())
    e, r = expected[idx] if idx else expected[()], received[idx] if idx else received[()]
    at = f" at index {idx}" if idx else ""
    return f"{n_bad} of {close.size} entries differ{_where(path)}; first{at}: expected {_fmt(e.item())}, received {_fmt(r.item())}"


# --------------------------------------------------------------------------- running


class _Timeout(BaseException):
    """Raised inside the learner's call when it runs past the time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit; a no-op where signals are unavailable (Windows, worker threads)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class CheckResult:
    """What a check found. ``status`` is one of ``passed``, ``not attempted``, ``wrong``."""

    exercise: Exercise
    status: str
    message: str
    n_cases: int = 0
    mistake: KnownWrong | None = None
    """The known mistake whose output matched the learner's, if any."""
    printed: str = ""
    """What the learner's function printed during the check (hidden from the report)."""

    @property
    def hint(self) -> str:
        return self.mistake.hint if self.mistake else self.exercise.hint


def _learner_frame(exc: BaseException) -> str:
    """The last line of the learner's own code in a traceback (not the checker's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.endswith("checker.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  in {f.name}, line {f.lineno}: {f.line}" if f.line else ""


def _outputs_agree(ex: Exercise, fn: Callable, cases: list[dict], outputs: list[Any]) -> bool:
    """Does ``fn`` reproduce ``outputs`` on every case? (Used to recognise a known mistake.)"""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), _time_limit(ex.timeout_s):
            for case, out in zip(cases, outputs):
                if describe_difference(ex.run(fn, case), out, ex.atol, ex.rtol) is not None:
                    return False
    except (Exception, _Timeout):  # noqa: BLE001 - a catalog entry that fails simply does not match
        return False
    return True


def make_cases(ex: Exercise, seeds: list[int] | None = None) -> list[dict]:
    """Seed 0 always (fixed cases come first); then fresh random seeds unless given."""
    if seeds is None:
        fresh = np.random.SeedSequence().generate_state(ex.n_random_seeds)
        seeds = [0, *map(int, fresh)]
    cases: list[dict] = []
    for seed in seeds:
        cases.extend(ex.cases(np.random.default_rng(seed)))
    return cases


def run_check(ex: Exercise, fn: Callable, seeds: list[int] | None = None) -> CheckResult:
    """Check ``fn`` against ``ex``; never raises for anything the learner's code does."""
    if not callable(fn):
        return CheckResult(ex, WRONG, f"check expected a function, received {_type_name(fn)} {_fmt(fn, 80)}.")
    cases = make_cases(ex, seeds)
    sink = io.StringIO()
    received: list[Any] = []
    for i, case in enumerate(cases):
        try:
            with contextlib.redirect_stdout(sink), _time_limit(ex.timeout_s):
                out = ex.run(fn, case)
        except NotImplementedError:
            return CheckResult(ex, NOT_ATTEMPTED, "", i, printed=sink.getvalue())
        except _Timeout:
            msg = (f"your function did not finish within {ex.timeout_s:g} s on this input:\n{_format_case(case)}\n"
                   "  Is there a loop that never ends (a convergence test that can't be met, a counter never increased)?")
            return CheckResult(ex, WRONG, msg, i, printed=sink.getvalue())
        except Exception as exc:  # noqa: BLE001 - the learner's error, reported in one paragraph
            msg = (f"your function raised {type(exc).__name__}: {exc}{_learner_frame(exc)}\n"
                   f"  on this input:\n{_format_case(case)}")
            return CheckResult(ex, WRONG, msg, i, printed=sink.getvalue())
        received.append(out)
    expected = [ex.run(ex.reference, case) for case in cases]
    diffs = [describe_difference(e, r, ex.atol, ex.rtol) for e, r in zip(expected, received)]
    failing = [i for i, d in enumerate(diffs) if d is not None]
    if failing:
        i = failing[0]
        case, out = cases[i], received[i]
        # Which known mistake explains the learner's outputs? Prefer one that agrees on every
        # case; else one that reproduces just the first failing case.
        mistake = next((kw for kw in ex.known_wrong if _outputs_agree(ex, kw.fn, cases, received)), None)
        if mistake is None:
            mistake = next((kw for kw in ex.known_wrong if _outputs_agree(ex, kw.fn, [case], [out])), None)
        msg = (f"{diffs[i]}.\n  input:\n{_format_case(case)}\n"
               f"  expected: {_indent(_fmt(expected[i]), ' ' * 12)}\n  received: {_indent(_fmt(out), ' ' * 12)}")
        return CheckResult(ex, WRONG, msg, len(cases), mistake=mistake, printed=sink.getvalue())
    return CheckResult(ex, PASSED, "", len(cases), printed=sink.getvalue())


# --------------------------------------------------------------------------- notebook API


class ExerciseWrong(Exception):
    """Raised by `check` when an answer is wrong. Shown in a notebook without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of printing a traceback
        return [str(self)]


def _report(result: CheckResult, name: str = "name") -> str:
    ex = result.exercise
    printed = result.printed.strip()
    note = f"\n  (your function printed {len(printed.splitlines())} line(s) during the check; hidden here)" if printed else ""
    if result.status == PASSED:
        return f"✅ Exercise {ex.id} ({ex.title}): passed on {result.n_cases} cases.{note}"
    if result.status == NOT_ATTEMPTED:
        return (f"⏳ Exercise {ex.id} ({ex.title}): not attempted yet. "
                f"The cells below use the reference implementation for now.")
    return (f"❌ Exercise {ex.id} ({ex.title}) is not right yet: {result.message}\n"
            f"  hint: {result.hint}{note}\n"
            f"  To move on for now, use the reference: `{name} = reference(\"{ex.id}\")`.")


def check(exercise_id: str, fn: Callable) -> Callable:
    """Check the learner's ``fn`` for exercise ``exercise_id``; return the function to use next.

    Passed: prints ✅ and returns ``fn``. Not attempted: prints ⏳ and returns the reference.
    Wrong: raises `ExerciseWrong` with the failing input, expected vs received, and a hint.
    """
    ex = get_exercise(exercise_id)
    result = run_check(ex, fn)
    name = getattr(fn, "__name__", "")
    report = _report(result, name if name.isidentifier() else "name")
    if result.status == WRONG:
        raise ExerciseWrong(report)
    print(report)
    return fn if result.status == PASSED else ex.reference
