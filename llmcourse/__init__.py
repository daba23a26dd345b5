"""llmcourse: reference code for "Reinforcement learning for LLMs, from Bellman to GRPO".

Modules are named by concept (``bellman``, ``gridworld``, …); the exercise checks live in
``llmcourse.checker`` and ``llmcourse.exercises``.
"""

from llmcourse.checker import check, reference
from llmcourse.notebook import setup

__all__ = ["check", "reference", "setup"]
__version__ = "0.1.0"
