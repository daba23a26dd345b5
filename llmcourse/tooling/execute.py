"""Run notebooks in a fresh kernel of this Python environment (used by `bench` and `execute`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, save: bool = False, timeout_s: int = 600) -> float:
    """Execute ``path`` top to bottom in a fresh kernel; return the wall seconds.

    The ``python3`` kernel is this interpreter (jupyter_client swaps ``python`` for
    ``sys.executable``). With ``save=True`` the outputs are written back: this is how the
    solutions' outputs are recorded.
    """
    from llmcourse.tooling.build import dumps

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute(env=dict(os.environ, PYTHONHASHSEED="0"))
    seconds = time.perf_counter() - start
    if save:
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)
        path.write_text(dumps(nb), encoding="utf-8")
    return seconds
