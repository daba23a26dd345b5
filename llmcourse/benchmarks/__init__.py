"""Chapter benchmarks: each module has `run() -> list[str]` (see llmcourse/bench.py)."""
