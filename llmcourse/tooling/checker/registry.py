"""The registry of the course's exercises: each ``llmcourse.tooling.exercises`` module registers its own."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from llmcourse.tooling.checker.exercise import Exercise

_REGISTRY: dict[str, Exercise] = {}
_BROKEN: dict[str, str] = {}
"""Exercise modules that failed to import: module name -> the error, shown when one of their checks is asked for."""


class RegistryError(RuntimeError):
    """An exercise id registered twice, or an exercise whose module could not be loaded."""


def register(*exercises: Exercise) -> None:
    """Add exercises to the registry (called by the modules in ``llmcourse.tooling.exercises``).

    An id may be registered once: a second exercise with the same id is an error, not a silent overwrite.
    """
    for ex in exercises:
        old = _REGISTRY.get(ex.id)
        if old is not None and old is not ex:
            raise RegistryError(f"exercise {ex.id} is registered twice: {old.title!r} "
                                f"({old.reference.__module__}) and {ex.title!r} ({ex.reference.__module__})")
        _REGISTRY[ex.id] = ex


def _load_exercise_modules() -> None:
    """Import every ``llmcourse.tooling.exercises`` module; one that fails is recorded, not fatal to the others."""
    from llmcourse.tooling import exercises

    for mod in pkgutil.iter_modules(exercises.__path__):
        name = f"llmcourse.tooling.exercises.{mod.name}"
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
    """Every exercise of the course, by id (imports every ``llmcourse.tooling.exercises`` module)."""
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

