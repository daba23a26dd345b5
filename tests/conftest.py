"""Session-wide test settings.

One torch thread for the whole test session: the course's tensors are tiny, so a second
thread only adds synchronisation (on a busy 2-core machine, much more than it saves), and
results that depend on the thread count stay fixed. Notebooks run in their own kernels and
set their thread count themselves (``llmcourse.setup``).

Hugging Face's libraries run offline (``HF_HUB_OFFLINE``): the course downloads nothing, and a test that
would reach for the Hub fails instead of hanging on a machine without a network. The notebooks' kernels
inherit the setting.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base():
    """The course's shipped base model (loaded once, sha256-checked). Tests must not train it."""
    from llmcourse.checkpoint import load_base_model

    return load_base_model()
