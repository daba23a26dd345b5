"""The checker itself: outcomes, messages, and learner code that misbehaves."""

import math

import numpy as np
import pytest
import torch

from llmcourse import checker as check_module
from llmcourse.checker import (NOT_ATTEMPTED, PASSED, WRONG, Exercise, ExerciseWrong, KnownWrong, check,
                             describe_difference, run_check)


def _ref(x: np.ndarray) -> np.ndarray:
    return 2 * x


def _cases(rng):
    return [dict(x=np.arange(3.0))] + [dict(x=rng.normal(size=4)) for _ in range(2)]


TOY = Exercise(id="0.1", title="Double", reference=_ref, cases=_cases, hint="multiply by two",
               known_wrong=[KnownWrong("adds one", lambda x: x + 1, "double, don't add one")], timeout_s=1.0)


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(check_module._REGISTRY, "0.1", TOY)


def test_passed_returns_the_learners_function(capsys):
    mine = lambda x: x * 2.0  # noqa: E731
    assert check("0.1", mine) is mine
    assert "passed" in capsys.readouterr().out


def test_not_attempted_returns_the_reference_and_says_so(capsys):
    def stub(x):
        raise NotImplementedError("Exercise 0.1: Double")

    assert check("0.1", stub) is _ref
    out = capsys.readouterr().out
    assert "not attempted" in out and "reference" in out


def test_wrong_raises_with_input_expected_received_and_hint():
    with pytest.raises(ExerciseWrong) as info:
        check("0.1", lambda x: x + 1)
    text = str(info.value)
    assert "input" in text and "expected" in text and "received" in text
    assert "double, don't add one" in text
    assert info.value._render_traceback_() == [text]  # IPython shows the message, not a traceback


def test_unknown_mistake_gets_the_general_hint():
    result = run_check(TOY, lambda x: 3 * x, seeds=[0])
    assert result.status == WRONG and result.mistake is None and result.hint == "multiply by two"


@pytest.mark.parametrize("bad,needle", [
    (lambda x: list(2 * x), "expected a NumPy array"),
    (lambda x: 2 * x[:2], "expected shape (3,)"),
    (lambda x: (2 * x).astype(int), "expected float entries"),
    (lambda x: x * np.nan, "NaN"),
    (lambda x: None, "returned None"),
    (lambda x: x.no_such_method(), "raised AttributeError"),
    (lambda x: "a string", "expected a NumPy array"),
])
def test_bad_learner_code_gets_a_clear_message_not_a_false_pass(bad, needle):
    result = run_check(TOY, bad, seeds=[0])
    assert result.status == WRONG
    assert needle in result.message


def test_infinite_loop_is_stopped():
    def forever(x):
        while True:
            pass

    result = run_check(TOY, forever, seeds=[0])
    assert result.status == WRONG and "did not finish" in result.message


def test_printing_is_captured_and_mentioned(capsys):
    def chatty(x):
        print("debugging", x)
        return 2 * x

    result = run_check(TOY, chatty, seeds=[0])
    assert result.status == PASSED and "debugging" in result.printed
    assert capsys.readouterr().out == ""


def test_a_function_that_mutates_its_input_does_not_change_later_cases():
    def mutating(x):
        x *= 2
        return x

    assert run_check(TOY, mutating, seeds=[0]).status == PASSED


def test_not_a_function():
    assert run_check(TOY, 42, seeds=[0]).status == WRONG


def test_stub_raising_midway_is_still_not_attempted():
    calls = []

    def partly(x):
        calls.append(1)
        if len(calls) > 1:
            raise NotImplementedError
        return 2 * x

    assert run_check(TOY, partly, seeds=[0]).status == NOT_ATTEMPTED


class TestDescribeDifference:
    def test_close_floats_match(self):
        assert describe_difference(1.0, 1.0 + 1e-9, 1e-6, 1e-6) is None

    def test_far_floats_differ(self):
        assert describe_difference(1.0, 1.1, 1e-6, 1e-6) == "expected 1, received 1.1"

    def test_nan_scalar(self):
        assert "NaN" in describe_difference(1.0, math.nan, 1e-6, 1e-6)

    def test_tensor_dtype(self):
        assert "dtype" in describe_difference(torch.zeros(2), torch.zeros(2, dtype=torch.float64), 1e-6, 1e-6)

    def test_tensor_shape(self):
        assert "shape" in describe_difference(torch.zeros(2, 3), torch.zeros(3, 2), 1e-6, 1e-6)

    def test_tensor_values(self):
        msg = describe_difference(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), 1e-6, 1e-6)
        assert "1 of 2 entries differ" in msg and "(1,)" in msg

    def test_nested_tuple_path(self):
        msg = describe_difference((np.zeros(2), 1), (np.zeros(2), 2), 1e-6, 1e-6)
        assert "[1]" in msg

    def test_bool_is_not_a_number(self):
        assert describe_difference(1.0, True, 1e-6, 1e-6) is not None

    def test_dict_keys(self):
        assert "keys" in describe_difference({"a": 1}, {"b": 1}, 1e-6, 1e-6)
