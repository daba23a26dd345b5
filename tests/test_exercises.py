"""Every exercise's check can pass, can say "not attempted", and can fail with the right hint.

Parametrised over the whole registry (``llmcourse.tooling.exercises``), so a new chapter's exercises
are covered as soon as they are registered.
"""

import json
from pathlib import Path

import pytest

from llmcourse.tooling.build import exercise_ids
from llmcourse.tooling.checker import NOT_ATTEMPTED, PASSED, WRONG, all_exercises, run_check

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = all_exercises()
CATALOG = [(ex_id, kw) for ex_id, ex in EXERCISES.items() for kw in ex.known_wrong]
RIGHT = [(ex_id, kr) for ex_id, ex in EXERCISES.items() for kr in ex.known_right]
SEEDS = [0, 1, 2]  # fixed, so that the suite is deterministic; the notebooks also draw fresh seeds


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise: replace this line with your code")


@pytest.mark.parametrize("ex_id", EXERCISES)
def test_reference_passes(ex_id):
    result = run_check(EXERCISES[ex_id], EXERCISES[ex_id].reference, seeds=SEEDS)
    assert result.status == PASSED, result.message
    assert result.n_cases >= 6


@pytest.mark.parametrize("ex_id", EXERCISES)
def test_reference_passes_on_fresh_random_seeds(ex_id):
    assert run_check(EXERCISES[ex_id], EXERCISES[ex_id].reference).status == PASSED


@pytest.mark.parametrize("ex_id", EXERCISES)
def test_stub_is_not_attempted(ex_id):
    assert run_check(EXERCISES[ex_id], _stub, seeds=SEEDS).status == NOT_ATTEMPTED


@pytest.mark.parametrize("ex_id", EXERCISES)
def test_catalog_has_at_least_three_known_mistakes(ex_id):
    assert len(EXERCISES[ex_id].known_wrong) >= 3


@pytest.mark.parametrize("ex_id,mistake", CATALOG, ids=[f"{e}-{kw.name}" for e, kw in CATALOG])
def test_known_mistake_is_rejected_with_its_hint(ex_id, mistake):
    result = run_check(EXERCISES[ex_id], mistake.fn, seeds=SEEDS)
    assert result.status == WRONG
    assert result.mistake is mistake, f"diagnosed as {result.mistake.name if result.mistake else None}"
    assert result.hint == mistake.hint


@pytest.mark.parametrize("ex_id,answer", RIGHT, ids=[f"{e}-{kr.name}" for e, kr in RIGHT])
def test_other_correct_answers_pass(ex_id, answer):
    result = run_check(EXERCISES[ex_id], answer.fn, seeds=SEEDS)
    assert result.status == PASSED, result.message


def test_every_notebook_exercise_is_registered_and_every_registered_one_is_used():
    in_notebooks = []
    for nb in sorted((ROOT / "solutions").glob("*.ipynb")):
        ids = exercise_ids(json.loads(nb.read_text(encoding="utf-8")))
        chapter = nb.name.split("_")[0].lstrip("0")             # "06_lora" -> "6", "A1_trl_peft" -> "A1"
        assert all(i.split(".")[0] == chapter for i in ids), f"{nb.name}: {ids}"
        in_notebooks += ids
    assert len(in_notebooks) == len(set(in_notebooks)), "an exercise number is used twice"
    assert sorted(in_notebooks) == sorted(EXERCISES)
