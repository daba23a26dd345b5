"""The bookkeeping every training loop shares: the history of a run, and its training time without evaluations.

Each algorithm keeps its own loop (they teach different data flows); what they log and how they time it is this::

    log = RunLog(model, on_eval)          # the clock starts
    for step in range(steps):
        log.evaluate(step)                # on_eval(step, model), its time not counted
        ...                               # sample, score, update
        log.add(loss=..., accuracy=...)   # one value per key and step
    return log.finish()                   # the history, with "seconds": [training time]

>>> log = RunLog()
>>> log.add(loss=0.5, accuracy=1.0); log.add(loss=0.25, accuracy=0.5)
>>> history = log.finish()
>>> history["loss"], history["accuracy"], len(history["seconds"])
([0.5, 0.25], [1.0, 0.5], 1)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence


class RunLog:
    """A run's history (``{key: [value per step]}``) and its clock; ``on_eval(step, model)`` is timed apart."""

    def __init__(self, model: Any = None, on_eval: Callable[[int, Any], None] | None = None,
                 keys: Sequence[str] = ()):
        self.model, self.on_eval = model, on_eval
        self.history: dict[str, list[float]] = {k: [] for k in keys}
        self.eval_seconds = 0.0
        self.start = time.perf_counter()

    def evaluate(self, step: int) -> None:
        """Call ``on_eval(step, model)`` (if there is one) and leave its time out of the training time."""
        if self.on_eval is None:
            return
        t0 = time.perf_counter()
        self.on_eval(step, self.model)
        self.eval_seconds += time.perf_counter() - t0

    def add(self, **values: float) -> None:
        """Append one value to each named series."""
        for k, v in values.items():
            self.history.setdefault(k, []).append(v)

    def finish(self) -> dict[str, list[float]]:
        """The history, with ``seconds``: the time since the start, evaluations not counted."""
        self.history["seconds"] = [time.perf_counter() - self.start - self.eval_seconds]
        return self.history
