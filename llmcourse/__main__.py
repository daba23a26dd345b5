"""Course commands.

    python -m llmcourse build            generate chapters/ from solutions/
    python -m llmcourse build --check    fail if chapters/ is stale
    python -m llmcourse execute FILE...  run solution notebooks and record their outputs
    python -m llmcourse bench            time every notebook, then run the course benchmarks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _root() -> Path:
    here = Path.cwd()
    for p in [here, *here.parents]:
        if (p / "solutions").is_dir() and (p / "pyproject.toml").exists():
            return p
    sys.exit("Run this from inside the course repository (no solutions/ folder found).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate chapters/ from solutions/")
    b.add_argument("--check", action="store_true", help="exit 1 if chapters/ is stale; write nothing")
    e = sub.add_parser("execute", help="execute notebooks and save their outputs")
    e.add_argument("files", nargs="+", type=Path)
    bench = sub.add_parser("bench", help="per-notebook wall time and the course benchmarks")
    bench.add_argument("--only", default="", help="substring filter on notebook / benchmark names")
    bench.add_argument("--skip-notebooks", action="store_true")
    bench.add_argument("--skip-extra", action="store_true", help="skip the chapter benchmarks")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        from llmcourse.tooling.build import build, stale_chapters

        root = _root()
        if args.check:
            stale = stale_chapters(root)
            if stale:
                print("chapters/ is stale:", ", ".join(stale), "\nRun: python -m llmcourse build")
                return 1
            print("chapters/ is up to date.")
            return 0
        changed = build(root)
        print("wrote " + ", ".join(changed) if changed else "chapters/ already up to date.")
        return 0

    if args.cmd == "execute":
        from llmcourse.tooling.execute import execute

        for f in args.files:
            print(f"{f}: {execute(f, save=True):.1f} s", flush=True)
        return 0

    if args.cmd == "bench":
        from llmcourse.tooling.benchmarks import run_all

        return run_all(_root(), only=args.only, notebooks=not args.skip_notebooks, extra=not args.skip_extra)
    return 2


if __name__ == "__main__":
    sys.exit(main())
