"""Session-wide test settings.

One torch thread for the whole test session: the course's tensors are tiny, so a second
thread only adds synchronisation (on a busy 2-core machine, much more than it saves), and
results that depend on the thread count stay fixed. Notebooks run in their own kernels and
set their thread count themselves (``llmcourse.setup``).
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base():
    """The course's shipped base model (loaded once, sha256-checked). Tests must not train it."""
    from llmcourse.checkpoint import load_base_model

    return load_base_model()
