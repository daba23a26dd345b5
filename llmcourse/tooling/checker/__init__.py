"""On-the-spot checks for the course's exercises.

In a notebook, right after an exercise::

    discounted_return = check("1.1", discounted_return)

`check` runs the learner's function against the reference on fixed and randomized cases
and reports exactly one outcome:

* passed: returns the learner's function, so later cells run on the learner's own code;
* not attempted yet (the stub still raises ``NotImplementedError``): returns the reference
  and says so, so an unsolved notebook still runs end to end;
* wrong: shows the failing input, expected vs received (value, shape or dtype) and a hint
  naming the likely mistake, rebinds the notebook's name to the reference (saying so), so the
  cells below still run, then raises `ExerciseWrong` so the cell fails (and ``pytest --nbval``
  on the learner's copy flags it).

The check judges what the code *does*, not only what it returns. Each call is observed:

* its value (type, shape, values; dtypes only where the exercise asks for one, ``exact_dtype``);
* its gradient with respect to the inputs named in ``grad_wrt``, for a loss and for any other floating
  result (per-token losses, a layer's output, a tuple of them), through one fixed vector–Jacobian probe (a
  result computed under ``torch.no_grad()`` or detached carries none; a misplaced ``detach`` gives another one);
* whether it changed an input in place (unless the exercise's contract is to do so, ``in_place``);
* facts an exercise's ``call`` records about a mechanism (`Observed`: e.g. how many tokens were
  fed to the model, which shows whether a cache is used).

An exercise is an `Exercise`: its reference, a case generator and a catalog of
`KnownWrong` versions (the mistakes learners really make). When a learner's answer is
wrong, the catalog is searched for a mistake whose observations match the learner's; its
hint is the one shown. The tests use the same catalog to prove that every check can fail,
and `KnownRight` variants (other correct answers) to prove that it does not reject them.

The package, one job per module:

* `exercise`: what an exercise declares (`Exercise`, `KnownWrong`, `KnownRight`, `Observed`) and the
  catalog builders for recurring mistakes (`updates_in_place`, `under_no_grad`, `as_float64`);
* `registry`: every chapter's exercises, by id;
* `fixtures`: shared fixtures of model-based checks (`tiny_gpt`);
* `compare`: comparing values and the pieces of messages;
* `limits`: time limits that learner code cannot swallow;
* `observe`: one call observed (value, gradients, changed inputs, traces) and how two observations differ;
* `run`: `run_check`, the learner's function on every case, a known mistake recognised;
* `api`: the notebook's `check` and `reference`.
"""

from llmcourse.tooling.checker.api import ExerciseWrong, check, reference
from llmcourse.tooling.checker.compare import describe_difference
from llmcourse.tooling.checker.exercise import (Exercise, KnownRight, KnownWrong, Observed, as_float64, make_cases,
                                                under_no_grad, updates_in_place)
from llmcourse.tooling.checker.fixtures import tiny_gpt
from llmcourse.tooling.checker.observe import probe_weights
from llmcourse.tooling.checker.registry import RegistryError, all_exercises, broken_modules, get_exercise, register
from llmcourse.tooling.checker.run import NOT_ATTEMPTED, PASSED, WRONG, CheckResult, run_check

__all__ = ["NOT_ATTEMPTED", "PASSED", "WRONG", "CheckResult", "Exercise", "ExerciseWrong", "KnownRight", "KnownWrong",
           "Observed", "RegistryError", "all_exercises", "as_float64", "broken_modules", "check", "describe_difference",
           "get_exercise", "make_cases", "probe_weights", "reference", "register", "run_check", "tiny_gpt",
           "under_no_grad", "updates_in_place"]
