"""Session-wide test settings.

One torch thread for the whole test session: the course's tensors are tiny, so a second
thread only adds synchronisation (on a busy 2-core machine, much more than it saves), and
results that depend on the thread count stay fixed. Notebooks run in their own kernels and
set their thread count themselves (``llmcourse.setup``).
"""

import torch

torch.set_num_threads(1)
