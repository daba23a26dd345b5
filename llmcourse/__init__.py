"""llmcourse: reference code for "Reinforcement learning for LLMs, from Bellman to GRPO".

Modules are named by concept (``bellman``, ``gridworld``, …). What runs the course (the checker,
the exercise definitions, the chapter build, notebook execution, the benchmarks) lives apart, in
``llmcourse.tooling``; a notebook reaches it only through ``check`` and ``reference``.
"""

from llmcourse.tooling.checker import check, reference
from llmcourse.notebook import setup

__all__ = ["check", "reference", "setup"]
__version__ = "0.1.0"
