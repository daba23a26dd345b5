"""The checker itself: outcomes, messages, and learner code that misbehaves."""

import dataclasses
import math
import sys
import textwrap

import numpy as np
import pytest
import torch

from llmcourse.tooling import checker as check_module
from llmcourse.tooling.checker import registry
from llmcourse.tooling.checker import (NOT_ATTEMPTED, PASSED, WRONG, Exercise, ExerciseWrong, KnownWrong, Observed,
                                       as_float64, check, describe_difference, make_cases, probe_weights, run_check,
                                       under_no_grad)


def _ref(x: np.ndarray) -> np.ndarray:
    return 2 * x


def _cases(rng):
    return [dict(x=np.arange(3.0))] + [dict(x=rng.normal(size=4)) for _ in range(2)]


TOY = Exercise(id="0.1", title="Double", reference=_ref, cases=_cases, hint="multiply by two",
               known_wrong=[KnownWrong("adds one", lambda x: x + 1, "double, don't add one")], timeout_s=1.0)


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "0.1", TOY)


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


def test_a_wrong_none_is_a_wrong_value_where_none_is_an_answer():
    vote = dataclasses.replace(TOY, reference=lambda x: None if x.size == 3 else 2 * x)      # None: one of the answers
    result = run_check(vote, lambda x: None, seeds=[0])
    assert result.status == WRONG and "returned None" in result.message                    # the guess, by default
    result = run_check(dataclasses.replace(vote, none_is_an_answer=True), lambda x: None, seeds=[0])
    assert result.status == WRONG and "returned None" not in result.message and "received None" in result.message


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


def test_a_function_that_mutates_its_input_is_told_so():
    def mutating(x):
        x *= 2
        return x

    result = run_check(TOY, mutating, seeds=[0])
    assert result.status == WRONG
    assert "changed its input `x` in place" in result.message and ".copy()" in result.message


def test_an_exercise_whose_contract_is_in_place_is_not_judged_for_it(monkeypatch):
    def in_place(x):
        x *= 2
        return x

    monkeypatch.setitem(registry._REGISTRY, "0.1", dataclasses.replace(TOY, in_place=True, reference=in_place))
    assert run_check(registry._REGISTRY["0.1"], in_place, seeds=[0]).status == PASSED


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


# --------------------------------------------------------------------------- losses: gradients, dtypes


def _loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((pred - target) ** 2).mean()


def _loss_cases(rng):
    return [dict(pred=torch.tensor([1.0, 2.0]), target=torch.tensor([0.0, 0.0]))] + [
        dict(pred=torch.from_numpy(rng.normal(size=5).astype(np.float32)),
             target=torch.from_numpy(rng.normal(size=5).astype(np.float32))) for _ in range(2)]


LOSS = Exercise(id="0.2", title="Half MSE", reference=_loss, cases=_loss_cases, hint="0.5 * mean((pred - target)**2)",
                grad_wrt=("pred",), timeout_s=1.0)


def test_a_loss_computed_under_no_grad_is_rejected():
    def no_grad_loss(pred, target):
        with torch.no_grad():
            return 0.5 * ((pred - target) ** 2).mean()

    result = run_check(LOSS, no_grad_loss, seeds=[0])
    assert result.status == WRONG and "carries no gradient" in result.message and "no_grad" in result.message


def test_a_loss_with_the_right_value_and_the_wrong_gradient_is_rejected():
    def half_detached(pred, target):
        return 0.5 * ((pred - target) * (pred - target).detach()).mean()  # value right, gradient halved

    result = run_check(LOSS, half_detached, seeds=[0])
    assert result.status == WRONG and "gradient with respect to `pred`" in result.message


def test_a_float64_loss_of_the_same_value_passes_unless_the_dtype_is_asked_for(monkeypatch):
    def float64_loss(pred, target):
        return 0.5 * ((pred.double() - target.double()) ** 2).mean()

    assert run_check(LOSS, float64_loss, seeds=[0]).status == PASSED
    strict = dataclasses.replace(LOSS, exact_dtype=True)
    result = run_check(strict, float64_loss, seeds=[0])
    assert result.status == WRONG and "dtype" in result.message


def test_a_float_result_where_integers_are_expected_is_still_rejected():
    ex = Exercise(id="0.3", title="Arange", reference=lambda n: torch.arange(n), hint="",
                  cases=lambda rng: [dict(n=3), dict(n=int(rng.integers(2, 6)))])
    result = run_check(ex, lambda n: torch.arange(n, dtype=torch.float32), seeds=[0])
    assert result.status == WRONG and "dtype" in result.message


# --------------------------------------------------------------------------- gradients of any floating output


def _layer(x: torch.Tensor, w: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    return x @ w.T + frozen.detach()                                   # (B, d_out); `frozen` is a constant


def _layer_cases(rng):
    def t(*shape):
        return torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    return [dict(x=torch.tensor([[1.0, 2.0]]), w=torch.tensor([[1.0, 0.0], [0.0, -1.0]]), frozen=torch.zeros(1, 2)),
            dict(x=t(3, 2), w=t(4, 2), frozen=t(3, 4))]


LAYER = Exercise(id="0.5", title="A layer", reference=_layer, cases=_layer_cases, hint="x wᵀ + frozen",
                 grad_wrt=("x", "w", "frozen"), grad_help="Training updates w through this output.", timeout_s=1.0)


def test_the_probe_is_fixed_and_weighs_every_entry():
    w = probe_weights((3, 4), 1)
    assert torch.equal(w, probe_weights((3, 4), 1)) and not torch.equal(w, probe_weights((3, 4), 2))
    assert bool(((w.abs() >= 0.5) & (w.abs() <= 1.5)).all()) and bool((w < 0).any() and (w > 0).any())
    assert probe_weights((), 0).item() == 1.0                          # a loss: its own gradient


def test_a_tensor_output_under_no_grad_carries_no_gradient_and_its_mistake_is_recognised():
    mistake = KnownWrong("no gradient", under_no_grad(_layer), "computed under no_grad")
    result = run_check(dataclasses.replace(LAYER, known_wrong=[mistake]), under_no_grad(_layer), seeds=[0])
    assert result.status == WRONG and result.mistake is mistake
    assert "your result carries no gradient" in result.message and "Training updates w" in result.message


def test_a_tensor_output_says_which_input_gets_no_gradient_or_the_wrong_one():
    result = run_check(LAYER, lambda x, w, frozen: x @ w.detach().T + frozen.detach(), seeds=[0])
    assert result.status == WRONG and "no gradient reaches `w`" in result.message

    result = run_check(LAYER, lambda x, w, frozen: 0.5 * (x @ w.T) + 0.5 * (x @ w.T).detach() + frozen.detach(),
                       seeds=[0])
    assert result.status == WRONG and "gradient with respect to `x` is not" in result.message
    assert "fixed random weight" in result.message and "entries differ" in result.message


def test_a_gradient_into_an_input_the_reference_detaches_is_rejected():
    result = run_check(LAYER, lambda x, w, frozen: x @ w.T + frozen, seeds=[0])
    assert result.status == WRONG and "a gradient reaches `frozen`" in result.message
    assert "`frozen.detach()`" in result.message


def test_a_float64_output_of_the_same_value_and_gradient_passes():
    assert run_check(LAYER, as_float64(_layer), seeds=[0, 1]).status == PASSED


def test_each_output_of_a_tuple_is_probed():
    def pair(x, w, frozen):
        y = _layer(x, w, frozen)
        return y, (y ** 2).sum()

    def second_detached(x, w, frozen):
        y = _layer(x, w, frozen)
        return y, (y ** 2).sum().detach()

    ex = dataclasses.replace(LAYER, reference=pair)
    assert run_check(ex, pair, seeds=[0, 1]).status == PASSED
    result = run_check(ex, second_detached, seeds=[0])
    assert result.status == WRONG and "gradient with respect to `x` is not" in result.message


def test_a_result_the_reference_returns_detached_must_be_detached():
    ex = dataclasses.replace(LAYER, reference=lambda x, w, frozen: _layer(x, w, frozen).detach(), grad_help="")
    assert run_check(ex, under_no_grad(_layer), seeds=[0]).status == PASSED
    result = run_check(ex, _layer, seeds=[0])
    assert result.status == WRONG and "carries a gradient (to `x`) where the reference's carries none" in result.message


def test_a_result_that_cannot_be_backpropagated_is_told_why():
    def exp_changed_in_place(x, w, frozen):
        e = torch.exp(x @ w.T)                                         # exp's backward needs its result...
        e *= 1.0                                                       # ...which is changed in place
        return torch.log(e) + frozen.detach()

    result = run_check(LAYER, exp_changed_in_place, seeds=[0])
    assert result.status == WRONG and "backpropagating through your result fails" in result.message
    assert "changed in place after it was used" in result.message


def test_an_input_changed_after_use_is_told_first_then_the_failed_backpropagation():
    def doubles_x_after_use(x, w, frozen):
        y = x @ w.T + frozen.detach()                                  # the matmul's backward needs x
        x *= 2
        return y

    result = run_check(LAYER, doubles_x_after_use, seeds=[0])
    assert result.status == WRONG and result.message.startswith("your function changed its input `x` in place")
    assert "Also, backpropagating through your result fails" in result.message


# --------------------------------------------------------------------------- mechanisms: traced facts


def _feeds(fn, case):
    fed = []
    out = fn(items=case["items"], feed=fed.append)
    return Observed(out, {"the number of items fed": len(fed)})


def _sum_feeding_once(items, feed):
    for x in items:
        feed(x)
    return sum(items)


TRACED = Exercise(id="0.4", title="Sum, feeding each item once", reference=_sum_feeding_once, hint="feed each item once",
                  cases=lambda rng: [dict(items=[1, 2, 3]), dict(items=[int(v) for v in rng.integers(0, 9, 4)])],
                  call=_feeds, trace_help={"the number of items fed": "each item is fed exactly once"})


def test_an_unused_mechanism_is_rejected_even_when_the_value_is_right():
    def feeds_twice(items, feed):
        for x in items + items:
            feed(x)
        return sum(items)

    result = run_check(TRACED, feeds_twice, seeds=[0])
    assert result.status == WRONG
    assert "the number of items fed" in result.message and "each item is fed exactly once" in result.message


def test_a_known_mistake_is_recognised_by_its_trace_too():
    def feeds_twice(items, feed):
        for x in items + items:
            feed(x)
        return sum(items)

    mistake = KnownWrong("feeds twice", feeds_twice, "you fed every item twice")
    ex = dataclasses.replace(TRACED, known_wrong=[KnownWrong("no feeding", lambda items, feed: sum(items), "feed them"),
                                                  mistake])
    assert run_check(ex, feeds_twice, seeds=[0]).mistake is mistake


def test_a_loss_rebuilt_from_a_number_is_told_no_gradient_reaches_its_input():
    def rebuilt(pred, target):
        return torch.tensor((0.5 * ((pred - target) ** 2).mean()).item(), requires_grad=True)

    result = run_check(LOSS, rebuilt, seeds=[0])
    assert result.status == WRONG and "no gradient reaches `pred`" in result.message and "?." not in result.message


def test_an_input_detached_in_place_is_a_changed_input():
    def detaches_target_first(pred, target):
        pred.detach_()
        return 0.5 * ((pred - target) ** 2).mean()

    result = run_check(LOSS, detaches_target_first, seeds=[0])
    assert result.status == WRONG and "detached in place" in result.message


def test_a_mistake_without_gradient_is_not_blamed_for_a_wrong_gradient():
    def half_detached(pred, target):
        return 0.5 * ((pred - target) * (pred - target).detach()).mean()

    no_grad = KnownWrong("no gradient", under_no_grad(_loss), "computed under no_grad")
    result = run_check(dataclasses.replace(LOSS, known_wrong=[no_grad]), half_detached, seeds=[0])
    assert result.status == WRONG and result.mistake is None


def test_doing_less_work_than_the_reference_passes_where_the_fact_is_a_count_of_work():
    def feeds_none(items, feed):
        return sum(items)

    def feeds_twice(items, feed):
        for x in items + items:
            feed(x)
        return sum(items)

    lenient = dataclasses.replace(TRACED, trace_at_most=("the number of items fed",))
    assert run_check(lenient, feeds_none, seeds=[0]).status == PASSED
    result = run_check(lenient, feeds_twice, seeds=[0])
    assert result.status == WRONG and "expected at most" in result.message


def test_a_hint_is_shown_only_for_a_mistake_that_explains_every_wrong_case():
    def wrong_everywhere(x):
        return x + 1 if len(x) == 3 else 3 * x   # "adds one" on the first case only

    result = run_check(TOY, wrong_everywhere, seeds=[0])
    assert result.status == WRONG and result.mistake is None and result.hint == TOY.hint


def test_a_renamed_parameter_is_told_to_keep_the_stubs_names():
    result = run_check(TOY, lambda values: 2 * values, seeds=[0])
    assert result.status == WRONG and "keep the stub's parameter names" in result.message


# --------------------------------------------------------------------------- time limits learner code cannot swallow


def _swallows_in_a_loop(x):
    while True:
        try:
            while True:
                pass
        except:  # noqa: E722 - the learner's bare except
            pass


def _swallows_and_returns(x):
    try:
        while True:
            pass
    except BaseException:
        return 2 * x


@pytest.mark.parametrize("fn", [_swallows_in_a_loop, _swallows_and_returns])
def test_a_time_limit_cannot_be_swallowed(fn):
    result = run_check(TOY, fn, seeds=[0])
    assert result.status == WRONG and "did not finish" in result.message


def test_the_time_limit_leaves_no_trace_behind():
    run_check(TOY, _swallows_in_a_loop, seeds=[0])
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__
    assert run_check(TOY, lambda x: 2 * x, seeds=[0]).status == PASSED


# --------------------------------------------------------------------------- messages: the learner's line, the seed


def test_an_error_points_at_the_learners_line_not_into_the_package():
    from llmcourse.model import attention

    def calls_the_package_badly(x):
        return attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))  # mismatched shapes

    result = run_check(TOY, calls_the_package_badly, seeds=[0])
    assert "in your `calls_the_package_badly`" in result.message and "mismatched shapes" in result.message


def test_a_failing_random_case_gives_its_seed_and_check_can_rerun_it():
    seed_0_inputs = [case["x"] for _, case in make_cases(TOY, [0])]

    def wrong_on_long_inputs(x):  # right on seed 0's cases only
        return 2 * x if any(np.array_equal(x, s) for s in seed_0_inputs) else 3 * x

    result = run_check(TOY, wrong_on_long_inputs, seeds=[0, 1234])
    assert result.status == WRONG and result.seed == 1234
    assert "seed 1234" in result.message and 'check("0.1", your_function, seed=1234)' in result.message
    with pytest.raises(ExerciseWrong, match="seed 1234"):
        check("0.1", wrong_on_long_inputs, seed=1234)


# --------------------------------------------------------------------------- on a wrong answer, the reference takes over


def _run_cell(tmp_path, source: str, namespace: dict) -> None:
    path = tmp_path / "cell.py"  # a real file, as IPython's cells are, so the checker can read the line
    path.write_text(textwrap.dedent(source))
    exec(compile(path.read_text(), str(path), "exec"), namespace)


def test_a_wrong_answer_rebinds_the_notebook_name_to_the_reference_and_still_fails(tmp_path):
    ns = {"check": check}
    with pytest.raises(ExerciseWrong) as info:
        _run_cell(tmp_path, """
            def double(x):
                return x + 1
            double = check("0.1", double)
        """, ns)
    assert ns["double"] is _ref
    assert "For now `double` is the reference implementation" in str(info.value)


def test_a_function_stuck_in_a_loop_is_replaced_so_the_next_cell_does_not_hang(tmp_path):
    ns = {"check": check}
    with pytest.raises(ExerciseWrong, match="did not finish"):
        _run_cell(tmp_path, """
            def my_double(x):
                while True:
                    pass
            double = check("0.1", my_double)
        """, ns)
    assert ns["double"] is _ref                                         # the name on the left of `=` is rebound
    assert (ns["double"](np.ones(2)) == 2).all()


# --------------------------------------------------------------------------- the registry


def test_an_exercise_id_registered_twice_fails_loudly():
    with pytest.raises(check_module.RegistryError, match="0.1"):
        check_module.register(dataclasses.replace(TOY, title="Another"))


def test_a_broken_exercise_module_does_not_break_the_other_chapters(monkeypatch):
    import pkgutil

    real = pkgutil.iter_modules

    def with_a_broken_one(path):
        yield from real(path)
        yield pkgutil.ModuleInfo(None, "no_such_chapter_module", False)

    monkeypatch.setattr(pkgutil, "iter_modules", with_a_broken_one)
    monkeypatch.setattr(registry, "_BROKEN", {})
    exercises = check_module.all_exercises()
    assert "1.1" in exercises and "5.4" in exercises
    assert "llmcourse.tooling.exercises.no_such_chapter_module" in check_module.broken_modules()
    with pytest.raises(KeyError, match="no_such_chapter_module failed to load"):
        check_module.get_exercise("99.1")
