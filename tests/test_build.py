"""chapters/ is generated from solutions/: stubs replace solution blocks, outputs are cleared."""

import json
from pathlib import Path

import pytest

from llmcourse.tooling.build import BuildError, chapter_notebook, stale_chapters, stub_source

ROOT = Path(__file__).resolve().parents[1]

SOLVED = '''# Exercise 3.2: Scale
def scale(x, k):
    """Multiply x by k."""
    ### BEGIN SOLUTION
    y = x * k
    return y
    ### END SOLUTION

scale = check("3.2", scale)'''


def test_chapters_are_up_to_date_with_solutions():
    stale = stale_chapters(ROOT)
    assert not stale, f"chapters/ is stale ({', '.join(stale)}): run `python -m llmcourse build`"


def test_every_solution_has_a_chapter_and_back():
    solutions = sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))
    chapters = sorted(p.name for p in (ROOT / "chapters").glob("*.ipynb"))
    assert solutions and solutions == chapters


def test_stub_keeps_signature_docstring_and_check_and_drops_the_solution():
    out = stub_source(SOLVED)
    assert 'def scale(x, k):\n    """Multiply x by k."""\n    raise NotImplementedError("Exercise 3.2: Scale")' in out
    assert "x * k" not in out and "SOLUTION" not in out
    assert out.endswith('scale = check("3.2", scale)')


def test_stub_is_valid_python_that_raises_the_exercise_message():
    namespace = {"check": lambda _id, fn: fn}
    exec(stub_source(SOLVED), namespace)
    with pytest.raises(NotImplementedError, match="Exercise 3.2: Scale"):
        namespace["scale"](1, 2)


def test_cells_without_solution_are_unchanged():
    assert stub_source("x = 1\nprint(x)") == "x = 1\nprint(x)"


@pytest.mark.parametrize("bad", [
    "# Exercise 1.1: T\n### BEGIN SOLUTION\nx = 1",                      # never closed
    "# Exercise 1.1: T\nx = 1\n### END SOLUTION",                         # END without BEGIN
    "# Exercise 1.1: T\n### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",  # nested
    "def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION",  # no exercise header
])
def test_broken_markers_are_refused(bad):
    with pytest.raises(BuildError):
        stub_source(bad)


def test_outputs_and_counts_are_cleared():
    nb = {"cells": [{"cell_type": "code", "source": ["print(1)"], "metadata": {}, "execution_count": 3,
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}],
          "metadata": {"widgets": {"state": {}}}, "nbformat": 4, "nbformat_minor": 5}
    out = chapter_notebook(nb)
    assert out["cells"][0]["outputs"] == [] and out["cells"][0]["execution_count"] is None
    assert "widgets" not in out["metadata"]
    assert nb["cells"][0]["execution_count"] == 3  # the input is not modified


def test_chapters_contain_no_solution_code():
    for path in (ROOT / "chapters").glob("*.ipynb"):
        text = json.loads(path.read_text(encoding="utf-8"))
        for cell in text["cells"]:
            assert "### BEGIN SOLUTION" not in "".join(cell["source"]), path.name
            assert cell.get("outputs", []) == [], path.name
