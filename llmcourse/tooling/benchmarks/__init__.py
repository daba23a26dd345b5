"""The benchmark command: per-notebook wall time, then each chapter's own measurements.

A chapter adds measurements by putting a module in this package with a
function ``run() -> list[str]`` that measures and returns the lines to print, and a fast smoke test
in ``tests/test_benchmarks.py``.
Timings are measured on whatever machine runs this; compare ratios within one run.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import time
from pathlib import Path


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, {dev}"


def run_all(root: Path, only: str = "", notebooks: bool = True, extra: bool = True) -> int:
    from llmcourse.tooling.execute import execute

    print(f"# llmcourse benchmark — {_machine()}", flush=True)
    if notebooks:
        print("\n## notebook wall time (fresh kernel, top to bottom)")
        print(f"{'notebook':<48} {'seconds':>8}")
        for folder in ("solutions", "chapters"):
            for nb in sorted((root / folder).glob("*.ipynb")):
                name = f"{folder}/{nb.name}"
                if only and only not in name:
                    continue
                try:
                    secs = f"{execute(nb, save=False):8.1f}"
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    secs = f"FAILED ({type(exc).__name__})"
                print(f"{name:<48} {secs}", flush=True)
    if extra:
        for mod in pkgutil.iter_modules(__path__):
            if only and only not in mod.name:
                continue
            module = importlib.import_module(f"llmcourse.tooling.benchmarks.{mod.name}")
            print(f"\n## {mod.name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
            start = time.perf_counter()
            for line in module.run():
                print(line, flush=True)
            print(f"({time.perf_counter() - start:.1f} s)", flush=True)
    return 0
