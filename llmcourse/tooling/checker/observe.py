"""Observing one call of a function: its value, the gradients it carries, the inputs it changed, the facts it traced.

Gradients are probed the same way for every exercise that declares ``grad_wrt``, whatever it returns: the
declared inputs are given as non-leaf tensors that require grad (as a network's outputs would be); each
floating tensor of the result (a loss, per-token losses, a layer's output, a tuple of them) is projected on
fixed weights of its shape, the projections are summed and backpropagated (a vector–Jacobian product). A 0-d
result, a loss, is weighted 1, so its own gradient is compared; a larger one gets fixed random weights of
size 0.5 to 1.5 and random sign, so every entry counts and a wrong gradient cannot hide in a sum.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from llmcourse.tooling.checker.compare import _fmt, _learner_frame, _same, _sentence, describe_difference
from llmcourse.tooling.checker.exercise import Exercise, Observed


@dataclass
class _Observation:
    """Everything the checker saw of one call: its value, gradients, changed inputs, traced facts."""

    value: Any
    grads: dict[str, Any] | None = None
    """For ``grad_wrt``: argument name -> the probe's gradient with respect to it (None where no gradient
    reaches it); None as a whole when the result carries no gradient."""
    grad_error: str | None = None
    """Why backpropagating through the result failed (None: it did not)."""
    mutated: dict[str, str] = field(default_factory=dict)
    """Argument name -> how it was changed in place."""
    trace: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the gradient probe


def probe_weights(shape: tuple[int, ...], k: int = 0) -> torch.Tensor:
    """The fixed weights the ``k``-th floating output of a result is projected on: 1 for a 0-d output (a loss),
    else magnitudes in [0.5, 1.5) with random signs, drawn from seed ``k``."""
    if len(shape) == 0:
        return torch.ones(())
    g = torch.Generator().manual_seed(k)
    magnitude = 0.5 + torch.rand(shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < 0.5, -magnitude, magnitude)


def _floating_outputs(value: Any) -> list[torch.Tensor]:
    """The floating tensors of a result (a tensor, or a tuple, list or dict of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _floating_outputs(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _floating_outputs(v)]
    return []


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, tuple):                                       # a named tuple too (torch.return_types)
        return tuple(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _backward_failure(exc: Exception) -> str:
    """Why backpropagating through a result failed, in a few words."""
    text = str(exc).strip().split("\n")[0]
    if "modified by an inplace operation" in text:
        return ("a tensor that the backward pass needs was changed in place after it was used (`-=`, `*=`, "
                "`.sub_()`, `x[...] = …`): compute into a new tensor instead")
    return f"{type(exc).__name__}: {_fmt(text, 300)}{_learner_frame(exc)}"


def _gradients(value: Any, leaves: dict[str, torch.Tensor]) -> tuple[dict[str, Any] | None, str | None]:
    """(gradients of the probe w.r.t. ``leaves``, None where none reaches one; None as a whole when the result
    carries no gradient) and why backpropagating failed (None when it did not)."""
    projections = [(t * probe_weights(tuple(t.shape), k).to(t.dtype).to(t.device)).sum()
                   for k, t in enumerate(_floating_outputs(value)) if t.requires_grad]
    if not projections:
        return None, None
    try:
        grads = torch.autograd.grad(sum(projections), list(leaves.values()), allow_unused=True)
    except Exception as exc:  # noqa: BLE001 - the learner's graph, e.g. a saved tensor changed in place
        return None, _backward_failure(exc)
    return dict(zip(leaves, grads)), None


def _reaches(grad: Any) -> bool:
    return grad is not None and bool(grad.detach().ne(0).any())


# --------------------------------------------------------------------------- one call


def _mutation(before: Any, after: Any) -> str:
    """A few words on how an input changed (for the message)."""
    d = describe_difference(before, after, 0.0, 0.0)
    return d.replace("expected", "it was").replace("received", "it is now") if d else "its contents changed"


def _observe(ex: Exercise, fn: Callable, case: dict) -> _Observation:
    """Run ``fn`` on a private copy of ``case`` and observe it (may raise whatever ``fn`` raises)."""
    args = copy.deepcopy(case)                                         # the learner's function gets its own copy
    leaves = {}
    for name in ex.grad_wrt:                                           # differentiate w.r.t. these inputs
        leaves[name] = args[name].detach().clone().requires_grad_(True)
        args[name] = leaves[name] * 1.0                                # a non-leaf, as a network's output would be
    passed = dict(args)
    out = ex.call(fn, args) if ex.call is not None else fn(**args)
    obs = _Observation(out.value, trace=dict(out.trace)) if isinstance(out, Observed) else _Observation(out)
    if leaves:
        obs.grads, obs.grad_error = _gradients(obs.value, leaves)
        obs.value = _detached(obs.value)
    if not ex.in_place:
        for name, before in case.items():
            after = passed[name]
            if name in leaves:
                if not (isinstance(after, torch.Tensor) and after.requires_grad):
                    obs.mutated[name] = ("it was detached in place, with `.detach_()` or `.requires_grad_(False)`, "
                                         "which cuts it out of the caller's graph")
                    continue
                before = before.detach()
            if not _same(before, after):
                obs.mutated[name] = _mutation(before, after)
    return obs


# --------------------------------------------------------------------------- how two observations differ


def _what(value: Any) -> str:
    """What the learner's function returns, for messages: a loss (0-d) or a result."""
    return "loss" if isinstance(value, torch.Tensor) and value.ndim == 0 else "result"


def _gradient_difference(ex: Exercise, name: str, expected: Any, received: Any, what: str) -> str | None:
    """How the learner's gradient w.r.t. input ``name`` differs from the reference's (None: it does not)."""
    if not _reaches(received):
        if not _reaches(expected):
            return None
        return (f"the value is right, but no gradient reaches `{name}` through your {what}: is a `.detach()` in the "
                f"wrong place, or was the {what} rebuilt from a number (`.item()`, `float()`, `torch.tensor(...)`)?")
    if expected is None:
        return (f"the value is right, but a gradient reaches `{name}` through your {what}, and none through the "
                f"reference's: `{name}` is a constant here, so detach it (`{name}.detach()`)")
    gd = describe_difference(expected, received, ex.atol * 10, ex.rtol * 10, exact_dtype=False)
    if gd is None:
        return None
    probed = "" if what == "loss" else " (probed with a fixed random weight on each entry of your result)"
    return (f"the value is right, but its gradient with respect to `{name}` is not{probed}: {gd}. "
            f"Is a `.detach()` missing, or in the wrong place?")


def _gradients_difference(ex: Exercise, expected: _Observation, received: _Observation) -> str | None:
    """How the gradients the learner's result carries differ from the reference's (None: they agree)."""
    what = _what(expected.value)
    if received.grad_error is not None:
        if expected.grad_error is not None:
            return None
        return f"the value is right, but backpropagating through your {what} fails: {received.grad_error}"
    if expected.grad_error is not None:                               # only when recognising a known mistake
        return "backpropagating through the known mistake's result fails, and through yours it does not"
    if expected.grads is None:                                         # the reference's result is detached
        reached = [n for n, g in (received.grads or {}).items() if _reaches(g)]
        if not reached:
            return None
        return (f"the value is right, but your {what} carries a gradient (to `{reached[0]}`) where the reference's "
                f"carries none: return it detached (`.detach()`)")
    if received.grads is None:
        return (f"your {what} carries no gradient: it was computed under `torch.no_grad()`, or detached on the way "
                f"(`.detach()`, `.item()`, `float()`, NumPy), so training with it would change nothing")
    for name in ex.grad_wrt:
        d = _gradient_difference(ex, name, expected.grads[name], received.grads[name], what)
        if d is not None:
            return d
    return None


def _observation_difference(ex: Exercise, expected: _Observation, received: _Observation,
                            strict: bool = False) -> str | None:
    """None when the learner's call behaved like the reference's, else what differs (first the value).

    ``strict``: traced facts must be equal even where less is right (to recognise a known mistake).
    """
    if ex.none_is_an_answer and received.value is None and expected.value is not None:
        d = f"expected {expected.value!r}, received None"
    else:
        d = describe_difference(expected.value, received.value, ex.atol, ex.rtol, exact_dtype=ex.exact_dtype)
    backward_fails = False
    if d is None and ex.grad_wrt:
        d = _gradients_difference(ex, expected, received)
        backward_fails = d is not None and received.grad_error is not None
        if d is not None and ex.grad_help:
            d = f"{_sentence(d)} {ex.grad_help}"
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
            if backward_fails:                                         # most likely the cause: said first
                d = (f"{_sentence(m)}\n  Also, backpropagating through your {_what(expected.value)} fails: "
                     f"{received.grad_error}")
            else:
                d = m if d is None else f"{_sentence(d)}\n  Also, {m}"
    return d


def _observations_agree(ex: Exercise, a: _Observation, b: _Observation) -> bool:
    return _observation_difference(ex, a, b, strict=True) is None and a.mutated.keys() == b.mutated.keys()
