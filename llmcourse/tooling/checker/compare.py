"""On-the-spot checks for the course's exercises.

In a notebook, right after an exercise::

    discounted_return = check("1.1", discounted_return)

`check` runs the learner's function against the reference on fixed and randomized cases
and reports exactly one outcome:

* passed: returns the learner's function, so later cells run on the learner's own code;
* not attempted yet (the stub still raises ``NotImplementedError``): returns the reference
  and says so, so an unsolved notebook still runs end to end;
* wrong: shows the failing input, expected vs received (value, shape or dtype) and a hint
  naming the likely mistake, rebinds the notebook's name to the reference (saying so), so the
  cells below still run, then raises `ExerciseWrong` so the cell fails (and ``pytest --nbval``
  on the learner's copy flags it).

The check judges what the code *does*, not only what it returns. Each call is observed:

* its value (type, shape, values; dtypes only where the exercise asks for one, ``exact_dtype``);
* for a loss, its gradient with respect to the inputs named in ``grad_wrt`` (a loss computed
  under ``torch.no_grad()`` or detached carries none; a misplaced ``detach`` gives another one);
* whether it changed an input in place (unless the exercise's contract is to do so, ``in_place``);
* facts an exercise's ``call`` records about a mechanism (`Observed`: e.g. how many tokens were
  fed to the model, which shows whether a cache is used).

An exercise is an `Exercise`: its reference, a case generator and a catalog of
`KnownWrong` versions (the mistakes learners really make). When a learner's answer is
wrong, the catalog is searched for a mistake whose observations match the learner's; its
hint is the one shown. The tests use the same catalog to prove that every check can fail,
and `KnownRight` variants (other correct answers) to prove that it does not reject them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import os
import pkgutil
import re
import signal
import sys
import threading
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from functools import lru_cache
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
class KnownRight:
    """Another correct answer (a different but valid implementation) that the check must accept."""

    name: str
    """Short label, e.g. ``"float64 loss"``."""
    fn: Callable
    """The implementation."""


@dataclass
class Observed:
    """What an exercise's ``call`` returns when it also records how the function worked.

    ``trace`` maps a fact's name to its value, e.g. ``{"tokens fed to the model": 21}``; the
    learner's facts must equal the reference's (``Exercise.trace_help`` explains each fact).
    """

    value: Any
    trace: dict[str, Any] = field(default_factory=dict)


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
    known_right: list[KnownRight] = field(default_factory=list)
    """Other correct answers; each must pass (the tests prove it)."""
    atol: float = 1e-6
    """Absolute tolerance for floating-point outputs."""
    rtol: float = 1e-5
    """Relative tolerance for floating-point outputs."""
    call: Callable[[Callable, dict], Any] | None = None
    """How to run a function on a case; default ``fn(**case)``. Override for stateful APIs.
    It may return `Observed` to record facts about how the function worked."""
    grad_wrt: tuple[str, ...] = ()
    """For a loss: the tensor arguments whose gradients must match the reference's."""
    exact_dtype: bool = False
    """Compare tensor dtypes exactly (only where the docstring names one); otherwise a float32
    result may be float64 and vice versa, and only the kind (float, integer, bool) must match."""
    in_place: bool = False
    """The contract is to change an input in place; otherwise changing one is reported."""
    trace_help: dict[str, str] = field(default_factory=dict)
    """For each fact an `Observed` trace records: what it shows, said to the learner when it differs."""
    trace_at_most: tuple[str, ...] = ()
    """Traced facts (counts of work done) where less than the reference's is also right."""
    timeout_s: float = 20.0
    """Per-call time limit, to catch infinite loops (where the platform allows it)."""
    n_random_seeds: int = 2
    """Besides seed 0, how many fresh random seeds to draw cases from."""


# --------------------------------------------------------------------------- catalog builders
# Behaviour classes that recur across chapters, written once. Each takes a correct function and
# returns a variant with the same value and the mistake's behaviour.


def updates_in_place(fn: Callable, arg: str) -> Callable:
    """``fn`` done in place: the right result is written into the caller's ``arg``, which is returned
    (``Q[s, a] += …; return Q``). The caller's array or tensor changes too."""
    def variant(**kwargs):
        result = fn(**kwargs)
        target = kwargs[arg]
        with (torch.no_grad() if torch is not None and isinstance(target, torch.Tensor) else contextlib.nullcontext()):
            target[...] = result
        return target
    return variant


def under_no_grad(fn: Callable) -> Callable:
    """``fn`` computed inside ``torch.no_grad()``: the value is right, the loss carries no gradient."""
    def variant(**kwargs):
        with torch.no_grad():
            return fn(**kwargs)
    return variant


def as_float64(fn: Callable) -> Callable:
    """``fn``'s result in float64: a correct answer where the docstring names no dtype."""
    def variant(**kwargs):
        out = fn(**kwargs)
        return out.double() if torch is not None and isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float64)
    return variant


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Exercise] = {}
_BROKEN: dict[str, str] = {}
"""Exercise modules that failed to import: module name -> the error, shown when one of their checks is asked for."""


class RegistryError(RuntimeError):
    """An exercise id registered twice, or an exercise whose module could not be loaded."""


def register(*exercises: Exercise) -> None:
    """Add exercises to the registry (called by the modules in ``llmcourse.exercises``).

    An id may be registered once: a second exercise with the same id is an error, not a silent overwrite.
    """
    for ex in exercises:
        old = _REGISTRY.get(ex.id)
        if old is not None and old is not ex:
            raise RegistryError(f"exercise {ex.id} is registered twice: {old.title!r} "
                                f"({old.reference.__module__}) and {ex.title!r} ({ex.reference.__module__})")
        _REGISTRY[ex.id] = ex


def _load_exercise_modules() -> None:
    """Import every ``llmcourse.exercises`` module; one that fails is recorded, not fatal to the others."""
    from llmcourse import exercises

    for mod in pkgutil.iter_modules(exercises.__path__):
        name = f"llmcourse.exercises.{mod.name}"
        if name in sys.modules or name in _BROKEN:
            continue
        try:
            importlib.import_module(name)
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken chapter must not break the others' checks
            sys.modules.pop(name, None)
            _BROKEN[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _id_key(exercise_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in exercise_id.split("."))


def all_exercises() -> dict[str, Exercise]:
    """Every exercise of the course, by id (imports every ``llmcourse.exercises`` module)."""
    _load_exercise_modules()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: _id_key(kv[0])))


def broken_modules() -> dict[str, str]:
    """Exercise modules that could not be imported, with their errors (empty when all is well)."""
    _load_exercise_modules()
    return dict(_BROKEN)


def get_exercise(exercise_id: str) -> Exercise:
    exercises = all_exercises()
    if exercise_id not in exercises:
        broken = "".join(f"\n  {name} failed to load: {err}" for name, err in _BROKEN.items())
        raise KeyError(f"No exercise {exercise_id!r}; known: {', '.join(exercises)}{broken}")
    return exercises[exercise_id]


def reference(exercise_id: str) -> Callable:
    """The reference implementation of an exercise, e.g. to move on when stuck."""
    return get_exercise(exercise_id).reference


# --------------------------------------------------------------------------- shared pieces of loss exercises


@lru_cache(maxsize=1)
def tiny_gpt():
    """A small random GPT (vocabulary 50, context 48, 2 layers, width 32) with large weights, so
    that greedy outputs depend on the whole context: the model that model-based checks run on."""
    from llmcourse.model import GPT, GPTConfig

    g = torch.Generator().manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("w"):                                   # embeddings: std 1
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() > 1:                                          # matrices: std 0.3; biases, norms kept
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


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


def describe_difference(expected: Any, received: Any, atol: float, rtol: float, path: str = "",
                        exact_dtype: bool = True) -> str | None:
    """None when ``received`` matches ``expected``, else one sentence saying what differs.

    With ``exact_dtype=False`` a tensor may differ in precision (float32 vs float64) but not in
    kind (float, integer, bool).

    >>> describe_difference(1.0, 1.0 + 1e-9, 1e-6, 1e-6) is None
    True
    >>> describe_difference(np.zeros(3), np.zeros(4), 1e-6, 1e-6)
    'expected shape (3,), received shape (4,)'
    """
    if received is None and expected is not None:
        return (f"your function returned None{_where(path)}: is a `return` statement missing, or did an "
                f"`except` swallow an error?")

    # ---- torch tensors: type, shape, dtype, NaN, values
    if torch is not None and isinstance(expected, torch.Tensor):
        if not isinstance(received, torch.Tensor):
            return f"expected a torch.Tensor{_where(path)}, received {_type_name(received)}"
        if tuple(received.shape) != tuple(expected.shape):
            return f"expected shape {tuple(expected.shape)}{_where(path)}, received shape {tuple(received.shape)}"
        if received.dtype != expected.dtype:
            kind_e, kind_r = _tensor_kind(expected.dtype), _tensor_kind(received.dtype)
            if exact_dtype or kind_e != kind_r:
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
            d = describe_difference(expected[k], received[k], atol, rtol, f"{path}[{k!r}]", exact_dtype)
            if d:
                return d
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(received, (tuple, list)):
            return f"expected a {type(expected).__name__} of length {len(expected)}{_where(path)}, received {_type_name(received)}"
        if len(received) != len(expected):
            return f"expected {len(expected)} items{_where(path)}, received {len(received)}"
        for i, (e, r) in enumerate(zip(expected, received)):
            d = describe_difference(e, r, atol, rtol, f"{path}[{i}]", exact_dtype)
            if d:
                return d
        return None

    # ---- scalars
    if isinstance(expected, (bool, np.bool_)):
        if not isinstance(received, (bool, np.bool_)):
            return f"expected True or False{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        return None if bool(received) == bool(expected) else f"expected {bool(expected)}{_where(path)}, received {bool(received)}"
    if isinstance(expected, (int, np.integer)):
        if isinstance(received, (bool, np.bool_)) or not isinstance(received, (int, np.integer)):
            whole = _is_real_number(received) and float(received) == int(float(received))
            return (f"expected an integer (int){_where(path)}, received {_type_name(received)} {_fmt(received)}"
                    + (": the number is whole, but return it as an int (`int(...)`, or `.item()` for a tensor)"
                       if whole else ""))
        return None if int(received) == int(expected) else f"expected {int(expected)}{_where(path)}, received {int(received)}"
    if isinstance(expected, (float, np.floating)):
        if not _is_real_number(received):
            return f"expected a number{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        if isinstance(expected, float) and torch is not None and isinstance(received, torch.Tensor):
            return (f"expected a Python float{_where(path)}, received a 0-d tensor {_fmt(received)}: return "
                    "`.item()` of it (a tensor prints as `tensor(…)` and keeps its graph and device)")
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


def _tensor_kind(dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else ("complex" if dtype.is_complex else "integer")


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


# --------------------------------------------------------------------------- time limits


class _Timeout(BaseException):
    """Raised inside the learner's call when it runs past the time limit."""


def _call_with_time_limit(seconds: float, thunk: Callable[[], Any]) -> Any:
    """``thunk()``, stopped with `_Timeout` after ``seconds`` (SIGALRM; no limit where signals are unavailable).

    Learner code cannot swallow the limit: once it expires, every line the learner's code runs
    raises `_Timeout` again (a trace function on its frames), so a bare ``except:`` or ``except
    BaseException`` inside a loop cannot keep it going; and the alarm repeats every 50 ms for code
    that sits in a long library call. A call that swallows the limit and returns is still a timeout.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        return thunk()
    state = {"active": True, "expired": False}
    here = __file__

    def tracer(frame, event, arg):
        # Raise on line events only: an error raised by a trace function uninstalls it, and the
        # learner's code must not be able to make that happen by catching the first `_Timeout`.
        if event == "line" and state["active"] and state["expired"] and frame.f_code.co_filename != here:
            raise _Timeout()
        return tracer

    def on_alarm(signum, frame):
        if not state["active"]:
            return
        state["expired"] = True
        sys.settrace(tracer)                                       # frames the learner's code opens from now on
        f = frame
        while f is not None and f.f_code.co_filename != here:      # frames it is in now, up to the checker
            f.f_trace = tracer
            f = f.f_back
        raise _Timeout()                                           # re-armed on every alarm (every 50 ms)

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_trace = sys.gettrace()
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        result = thunk()
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        sys.settrace(old_trace)
    if state["expired"]:
        raise _Timeout()
    return result


# --------------------------------------------------------------------------- observing one call


@dataclass
class _Observation:
    """Everything the checker saw of one call: its value, gradients, changed inputs, traced facts."""

    value: Any
    grads: dict[str, Any] | None = None
    """For a loss (``grad_wrt``): argument name -> gradient tensor, or None when the loss carries no gradient."""
    mutated: dict[str, str] = field(default_factory=dict)
    """Argument name -> how it was changed in place."""
    trace: dict[str, Any] = field(default_factory=dict)


def _same(before: Any, after: Any) -> bool:
    """Exact equality of an input before and after a call (for tensors, arrays, containers, modules)."""
    if torch is not None and isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and before.shape == after.shape and before.dtype == after.dtype
                and bool(torch.equal(before.detach().cpu(), after.detach().cpu())
                         or (before.is_floating_point() and torch.allclose(before.detach().cpu(), after.detach().cpu(),
                                                                           rtol=0, atol=0, equal_nan=True))))
    if torch is not None and isinstance(before, torch.nn.Module):
        a, b = before.state_dict(), after.state_dict()
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(before, np.ndarray):
        return (isinstance(after, np.ndarray) and before.shape == after.shape
                and bool(np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")))
    if isinstance(before, dict):
        return isinstance(after, dict) and before.keys() == after.keys() and all(_same(before[k], after[k]) for k in before)
    if isinstance(before, (list, tuple)):
        return (isinstance(after, (list, tuple)) and len(before) == len(after)
                and all(_same(x, y) for x, y in zip(before, after)))
    if isinstance(before, (int, float, str, bool, type(None), np.generic)):
        return before == after or (isinstance(before, float) and math.isnan(before) and math.isnan(after))
    return True  # an object we cannot compare (an environment, a generator): not judged


def _mutation(before: Any, after: Any) -> str:
    """A few words on how an input changed (for the message)."""
    d = describe_difference(before, after, 0.0, 0.0)
    return d.replace("expected", "it was").replace("received", "it is now") if d else "its contents changed"


def _gradients(loss: Any, leaves: dict[str, Any]) -> dict[str, Any] | None:
    """Gradients of a scalar ``loss`` w.r.t. ``leaves`` (None for a leaf no gradient reaches);
    None as a whole when the loss carries no gradient."""
    if not (torch is not None and isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1):
        return None
    loss.backward()
    return {name: leaf.grad for name, leaf in leaves.items()}


def _gradient_difference(ex: Exercise, name: str, expected: Any, received: Any) -> str | None:
    """How the learner's gradient w.r.t. input ``name`` differs from the reference's (None: it does not)."""
    if received is None and expected is None:
        return None
    if received is None:
        if not bool(expected.any()):
            return None
        return (f"the value is right, but no gradient reaches `{name}` through your loss: is a `.detach()` in the "
                "wrong place, or was the loss rebuilt from a number (`.item()`, `float()`, `torch.tensor(...)`)?")
    gd = describe_difference(torch.zeros_like(received) if expected is None else expected, received,
                             ex.atol * 10, ex.rtol * 10, exact_dtype=False)
    if gd is None:
        return None
    return (f"the value is right, but its gradient with respect to `{name}` is not: {gd}. "
            f"Is a `.detach()` missing, or in the wrong place?")


def _observe(ex: Exercise, fn: Callable, case: dict) -> _Observation:
    """Run ``fn`` on a private copy of ``case`` and observe it (may raise whatever ``fn`` raises)."""
    args = copy.deepcopy(case)                                         # the learner's function gets its own copy
    leaves = {}
    for name in ex.grad_wrt:                                           # a loss: differentiate w.r.t. these inputs
        leaves[name] = args[name].detach().clone().requires_grad_(True)
        args[name] = leaves[name] * 1.0                                # a non-leaf, as a network's output would be
    passed = dict(args)
    out = ex.call(fn, args) if ex.call is not None else fn(**args)
    obs = _Observation(out.value, trace=dict(out.trace)) if isinstance(out, Observed) else _Observation(out)
    if ex.grad_wrt:
        obs.grads = _gradients(obs.value, leaves)
        if torch is not None and isinstance(obs.value, torch.Tensor):
            obs.value = obs.value.detach()
    if not ex.in_place:
        for name, before in case.items():
            after = passed[name]
            if name in leaves:
                if not after.requires_grad:
                    obs.mutated[name] = ("it was detached in place, with `.detach_()` or `.requires_grad_(False)`, "
                                         "which cuts it out of the caller's graph")
                    continue
                before = before.detach()
            if not _same(before, after):
                obs.mutated[name] = _mutation(before, after)
    return obs


_NO_GRAD = ("your loss carries no gradient: it was computed under `torch.no_grad()`, or detached on the way "
            "(`.detach()`, `.item()`, `float()`, NumPy), so training with it would change nothing")


def _observation_difference(ex: Exercise, expected: _Observation, received: _Observation,
                            strict: bool = False) -> str | None:
    """None when the learner's call behaved like the reference's, else what differs (first the value).

    ``strict``: traced facts must be equal even where less is right (to recognise a known mistake).
    """
    d = describe_difference(expected.value, received.value, ex.atol, ex.rtol, exact_dtype=ex.exact_dtype)
    if d is None and (expected.grads is not None or received.grads is not None):
        if received.grads is None:
            d = _NO_GRAD
        elif expected.grads is None:
            d = "the value is right, but your loss carries a gradient where the reference's carries none"
        else:
            for name in expected.grads:
                d = _gradient_difference(ex, name, expected.grads[name], received.grads[name])
                if d is not None:
                    break
    if d is None:
        for fact, value in expected.trace.items():
            got = received.trace.get(fact)
            at_most = fact in ex.trace_at_most and not strict
            if got == value or (at_most and isinstance(got, (int, float)) and got <= value):
                continue
            d = f"the value is right, but {fact}: expected {'at most ' if at_most else ''}{_fmt(value)}, received {_fmt(got)}"
            if ex.trace_help.get(fact):
                d += f" ({ex.trace_help[fact]})"
            break
    if received.mutated.keys() != expected.mutated.keys():
        changed = [n for n in received.mutated if n not in expected.mutated]
        if changed:
            name = changed[0]
            m = (f"your function changed its input `{name}` in place ({received.mutated[name]}). It must return a new "
                 f"value and leave `{name}` as it was (copy it first: `.copy()` for an array, `.clone()` for a "
                 "tensor): the caller still uses it, so later cells would see other numbers")
            d = m if d is None else f"{_sentence(d)}\n  Also, {m}"
    return d


def _observations_agree(ex: Exercise, a: _Observation, b: _Observation) -> bool:
    return _observation_difference(ex, a, b, strict=True) is None and a.mutated.keys() == b.mutated.keys()


# --------------------------------------------------------------------------- checking


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


def _in_package(filename: str) -> bool:
    """Is this file the course package's or a library's (not the learner's own code)?"""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.abspath(filename)
    return (path.startswith(here + os.sep) or "site-packages" in path or "dist-packages" in path
            or path.startswith(os.path.dirname(os.__file__) + os.sep))


def _learner_frame(exc: BaseException) -> str:
    """The last line of the learner's own code in a traceback (not the checker's, the package's or a library's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not _in_package(f.filename)]
    if not mine:
        return ""
    f = mine[-1]
    return f"\n  in your `{f.name}`, line {f.lineno}: {f.line}" if f.line else ""


def make_cases(ex: Exercise, seeds: list[int] | None = None) -> list[tuple[int, dict]]:
    """(seed, case) pairs: seed 0 always (fixed cases come first); then fresh random seeds unless given."""
    if seeds is None:
        fresh = np.random.SeedSequence().generate_state(ex.n_random_seeds)
        seeds = [0, *map(int, fresh)]
    return [(seed, case) for seed in seeds for case in ex.cases(np.random.default_rng(seed))]


def _where_from(ex: Exercise, i: int, n: int, seed: int) -> str:
    if seed == 0:
        return f"case {i + 1} of {n}, a fixed case"
    return (f"case {i + 1} of {n}, drawn with seed {seed} (to re-run exactly these cases: "
            f"`check(\"{ex.id}\", your_function, seed={seed})`)")


def _sentence(text: str) -> str:
    """``text`` ending with one punctuation mark."""
    return text if text.endswith((".", "?", "!")) else text + "."


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


# --------------------------------------------------------------------------- notebook API


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
