"""What an exercise declares: its reference, its cases, the catalog of known mistakes and other right answers.

Also the catalog builders: behaviour classes that recur across chapters (an input changed in place, a result
without its gradient, a float64 result), written once. Each takes a correct function and returns a variant
with the same value and the mistake's behaviour.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


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
    """Absolute tolerance for floating-point outputs (ten times it for their gradients)."""
    rtol: float = 1e-5
    """Relative tolerance for floating-point outputs (ten times it for their gradients)."""
    call: Callable[[Callable, dict], Any] | None = None
    """How to run a function on a case; default ``fn(**case)``. Override for stateful APIs.
    It may return `Observed` to record facts about how the function worked."""
    grad_wrt: tuple[str, ...] = ()
    """The tensor arguments whose gradients must match the reference's. They are given to the function as
    non-leaf tensors that require grad (as a network's outputs would be); the result, any floating tensor or
    tuple of them (a loss, per-token losses, a layer's output), is differentiated through a fixed vector–Jacobian
    probe. Where the reference's gradient w.r.t. an argument is zero (a detached input), the learner's must be too."""
    grad_help: str = ""
    """Why the gradient matters in this exercise, said to the learner when it is missing or wrong."""
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
    none_is_an_answer: bool = False
    """None is one of the function's answers (a vote with no votes): a wrong None is then reported as a wrong
    value, not as a `return` statement that may be missing."""


def make_cases(ex: Exercise, seeds: list[int] | None = None) -> list[tuple[int, dict]]:
    """(seed, case) pairs: seed 0 always (fixed cases come first); then fresh random seeds unless given."""
    if seeds is None:
        fresh = np.random.SeedSequence().generate_state(ex.n_random_seeds)
        seeds = [0, *map(int, fresh)]
    return [(seed, case) for seed in seeds for case in ex.cases(np.random.default_rng(seed))]


# --------------------------------------------------------------------------- catalog builders


def updates_in_place(fn: Callable, arg: str) -> Callable:
    """``fn`` done in place: the right result is written into the caller's ``arg``, which is returned
    (``Q[s, a] += …; return Q``). The caller's array or tensor changes too."""
    def variant(**kwargs):
        result = fn(**kwargs)
        target = kwargs[arg]
        with torch.no_grad() if isinstance(target, torch.Tensor) else contextlib.nullcontext():
            target[...] = result
        return target
    return variant


def under_no_grad(fn: Callable) -> Callable:
    """``fn`` computed inside ``torch.no_grad()``: the value is right, the result carries no gradient."""
    def variant(**kwargs):
        with torch.no_grad():
            return fn(**kwargs)
    return variant


def as_float64(fn: Callable) -> Callable:
    """``fn``'s result in float64: a correct answer where the docstring names no dtype."""
    def variant(**kwargs):
        out = fn(**kwargs)
        return out.double() if isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float64)
    return variant
