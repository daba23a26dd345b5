"""Generate the learner notebooks in ``chapters/`` from the solved ones in ``solutions/``.

``solutions/`` is the single source. In each code cell, the lines between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` (markers included) become one stub line,
at the marker's indentation::

    raise NotImplementedError("Exercise 1.1: Discounted return")

Everything else (signature, docstring, the ``check`` call) is kept; outputs and execution
counts are cleared. The exercise's number and title come from the cell's first line,
which must read ``# Exercise N.k: Title``.

    python -m llmcourse build          # rewrite chapters/
    python -m llmcourse build --check  # exit 1 if chapters/ is stale
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_HEADER = re.compile(r"^#\s*Exercise\s+(\d+\.\d+)\s*:\s*(.+?)\s*$")


class BuildError(ValueError):
    """A solution notebook breaks the marker rules."""


def stub_source(source: str, where: str = "cell") -> str:
    """Replace every solution block in one cell's source with a ``NotImplementedError`` stub.

    >>> print(stub_source("# Exercise 1.1: Add\\ndef add(a, b):\\n    ### BEGIN SOLUTION\\n    return a + b\\n    ### END SOLUTION"))
    # Exercise 1.1: Add
    def add(a, b):
        raise NotImplementedError("Exercise 1.1: Add")
    """
    lines = source.split("\n")
    if not any(line.strip() == BEGIN for line in lines) and not any(line.strip() == END for line in lines):
        return source
    header = _HEADER.match(lines[0])
    if not header:
        raise BuildError(f"{where}: a cell with a solution block must start with '# Exercise N.k: Title'")
    label = f"Exercise {header.group(1)}: {header.group(2)}"
    out: list[str] = []
    inside = False
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise BuildError(f"{where}, line {n}: {BEGIN} inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError({json.dumps(label, ensure_ascii=False)})")
        elif stripped == END:
            if not inside:
                raise BuildError(f"{where}, line {n}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise BuildError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


def exercise_ids(nb: dict) -> list[str]:
    """The exercise numbers of a notebook, from its ``# Exercise N.k: Title`` cells with solutions."""
    ids = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and BEGIN in src:
            m = _HEADER.match(src.split("\n")[0])
            if m:
                ids.append(m.group(1))
    return ids


def chapter_notebook(solution: dict, where: str = "notebook") -> dict:
    """The learner's version of a solved notebook (a new dict; the input is not changed)."""
    nb = json.loads(json.dumps(solution))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = stub_source(src, f"{where}, cell {i}")
        cell["source"] = _split_lines(new)
        cell["outputs"] = []
        cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)  # saved widget state belongs to the solved run
    return nb


def _split_lines(text: str) -> list[str]:
    """Jupyter's on-disk form: a list of lines, each but the last ending in a newline."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def dumps(nb: dict) -> str:
    """Serialise a notebook the way Jupyter does (1-space indent, trailing newline)."""
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def expected_chapters(root: Path) -> dict[Path, str]:
    """Map each ``chapters/*.ipynb`` path to the text it should have."""
    result = {}
    for sol in sorted((root / "solutions").glob("*.ipynb")):
        nb = json.loads(sol.read_text(encoding="utf-8"))
        result[root / "chapters" / sol.name] = dumps(chapter_notebook(nb, sol.name))
    return result


def stale_chapters(root: Path) -> list[str]:
    """Names of chapter notebooks that are missing, out of date, or have no solution."""
    expected = expected_chapters(root)
    stale = [p.name for p, text in expected.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    orphans = [p.name for p in (root / "chapters").glob("*.ipynb") if p not in expected]
    return sorted(stale + orphans)


def build(root: Path) -> list[str]:
    """Write ``chapters/`` from ``solutions/``; returns the names written or removed."""
    expected = expected_chapters(root)
    (root / "chapters").mkdir(exist_ok=True)
    changed = []
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path.name)
    for path in (root / "chapters").glob("*.ipynb"):
        if path not in expected:
            path.unlink()
            changed.append(f"{path.name} (removed)")
    return changed
