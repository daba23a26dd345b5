"""The task world of chapters 04–10: multi-digit addition with a checkable answer.

A problem is two numbers to add. The model is prompted in a chat format and answers in one
of two *styles*, then the end-of-text token::

    prompt:    <|user|>What is 47+385?<|assistant|>
    reasoned:  <think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer><|endoftext|>
    bare:      <answer>432</answer><|endoftext|>

The reasoned style works the sum out in column sums from the right, with carries, before it
answers; the bare style states the answer at once. Real training data mixes the two (worked
solutions next to bare answers), and so does the course's: the base model of chapter 05 saw
both, the bare style more often. A tiny model can add long numbers by writing the column sums
but seldom in its head, so the base model answers mostly without reasoning and is often wrong,
while the better behaviour is already in it. Making it reason before it answers is what the
rule rewards of chapters 08–10 teach (DeepSeek-R1-Zero at toy scale).

Rewards are rules, as in DeepSeek-R1-Zero: `is_correct` (exact answer match) and
`format_ok` (the response has exactly the reasoned shape; a bare answer fails it). Problems
come from a seeded generator; `eval_problems()` is a fixed held-out set that
`sample_problems` never returns. Operands have 1 to 3 digits, so short problems are easy
and long ones with carries are hard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Special tokens (one token each in the course's tokenizer, see `llmcourse.tokenizer`).
EOS = "<|endoftext|>"
PAD = "<|pad|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"
SPECIAL_TOKENS = [EOS, PAD, USER, ASSISTANT, THINK, END_THINK, ANSWER, END_ANSWER]

REASONED, BARE = "reasoned", "bare"
STYLES = (REASONED, BARE)
"""The two response styles: column sums then the answer, or the answer alone."""

EVAL_SEED = 20_240
"""Seed of the held-out evaluation set."""
EVAL_SIZE = 256
"""Number of held-out evaluation problems."""


@dataclass(frozen=True)
class TaskConfig:
    """Which problems the generator draws."""

    min_digits: int = 1
    """Fewest digits of an operand."""
    max_digits: int = 3
    """Most digits of an operand (each operand's length is drawn uniformly in between)."""


@dataclass(frozen=True)
class Problem:
    """One addition problem ``a + b``."""

    a: int
    b: int

    @property
    def question(self) -> str:
        """``Problem(47, 385).question -> 'What is 47+385?'``"""
        return f"What is {self.a}+{self.b}?"

    @property
    def answer(self) -> int:
        return self.a + self.b


def reasoning(p: Problem) -> str:
    """Column sums from the right, carry written when it is 1.

    ``reasoning(Problem(47, 385)) -> '7+5=12,4+8+1=13,0+3+1=4'``
    """
    da, db = str(p.a)[::-1], str(p.b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
        carry = s // 10
    return ",".join(steps)


def prompt(p: Problem) -> str:
    """The chat prompt the model continues: ``<|user|>What is 47+385?<|assistant|>``."""
    return f"{USER}{p.question}{ASSISTANT}"


def bare_response(p: Problem) -> str:
    """The answer alone, without reasoning: ``bare_response(Problem(47, 385)) -> '<answer>432</answer>'``.

    Right, but it fails `format_ok` (no reasoning part), so it earns less reward than `response`.
    """
    return f"{ANSWER}{p.answer}{END_ANSWER}"


def response(p: Problem, style: str = REASONED) -> str:
    """The ideal response in a style (default: reasoned), without the end-of-text token.

    ``response(Problem(47, 385)) -> '<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>'``;
    ``response(Problem(47, 385), style="bare") -> '<answer>432</answer>'``.
    """
    if style == REASONED:
        return f"{THINK}{reasoning(p)}{END_THINK}{ANSWER}{p.answer}{END_ANSWER}"
    if style == BARE:
        return bare_response(p)
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def transcript(p: Problem, style: str = REASONED) -> str:
    """Prompt, ideal response in ``style`` and end-of-text: one training document."""
    return prompt(p) + response(p, style) + EOS


def draw_styles(n: int, reasoned_share: float, seed: int) -> list[str]:
    """A seeded style for each of ``n`` documents: ``"reasoned"`` with probability ``reasoned_share``, else ``"bare"``.

    >>> draw_styles(4, 1.0, seed=0), draw_styles(2, 0.0, seed=0)
    (['reasoned', 'reasoned', 'reasoned', 'reasoned'], ['bare', 'bare'])
    """
    reasoned = np.random.default_rng(seed).random(n) < reasoned_share
    return [REASONED if r else BARE for r in reasoned]


def n_digits(p: Problem) -> int:
    """Digits of the longer operand: ``n_digits(Problem(47, 385)) -> 3``."""
    return len(str(max(p.a, p.b)))


def n_carries(p: Problem) -> int:
    """How many column sums reach 10 (each carries a 1 to the next column, the last one included).

    ``n_carries(Problem(47, 385)) -> 2`` (7+5=12 and 4+8+1=13); ``n_carries(Problem(99, 1)) -> 2``.
    """
    return sum(int(step.split("=")[1]) >= 10 for step in reasoning(p).split(","))


# --------------------------------------------------------------------------- generator


def sample_problem(rng: np.random.Generator, cfg: TaskConfig = TaskConfig()) -> Problem:
    """One problem; each operand's number of digits is uniform in [min_digits, max_digits]."""
    def operand() -> int:
        n = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
        return int(rng.integers(0 if n == 1 else 10 ** (n - 1), 10**n))
    return Problem(operand(), operand())


@lru_cache(maxsize=4)
def eval_problems(cfg: TaskConfig = TaskConfig()) -> tuple[Problem, ...]:
    """The fixed held-out evaluation set (distinct problems, seed `EVAL_SEED`)."""
    rng = np.random.default_rng(EVAL_SEED)
    seen: dict[Problem, None] = {}
    while len(seen) < EVAL_SIZE:
        seen[sample_problem(rng, cfg)] = None
    return tuple(seen)


def hard_problems() -> list[Problem]:
    """The hard slice: the evaluation seed's fixed 3-digit problems with ≥ 2 carries (135 of 256).

    The base model's pass@k still has headroom here (chapter 10, section 7), so the methods of chapters 10–11 can be
    told apart where the 256 held-out problems put them all near 100%.
    """
    return [p for p in eval_problems(TaskConfig(3, 3)) if n_carries(p) >= 2]


def sample_problems(n: int, seed: int, cfg: TaskConfig = TaskConfig()) -> list[Problem]:
    """``n`` training problems from ``seed``, never one of the held-out `eval_problems`."""
    rng = np.random.default_rng(seed)
    held_out = set(eval_problems(cfg))
    out: list[Problem] = []
    while len(out) < n:
        p = sample_problem(rng, cfg)
        if p not in held_out:
            out.append(p)
    return out


# --------------------------------------------------------------------------- verifier

_FORMAT = re.compile(r"<think>[^<>]*</think><answer>(\d+)</answer>")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def strip_eos(text: str) -> str:
    """The response up to (not including) the first end-of-text token."""
    return text.split(EOS, 1)[0]


def format_ok(text: str) -> bool:
    """Is the response exactly ``<think>…</think><answer>DIGITS</answer>`` (EOS optional)?

    ``format_ok('<think>2+2=4</think><answer>4</answer>') -> True``;
    ``format_ok('<answer>4</answer>') -> False`` (no reasoning part: the bare style fails it).
    """
    return _FORMAT.fullmatch(strip_eos(text)) is not None


def parse_answer(text: str) -> str | None:
    """The text inside the first ``<answer>…</answer>``, stripped, or None."""
    m = _ANSWER.search(strip_eos(text))
    return m.group(1).strip() if m else None


def is_correct(text: str, problem: Problem) -> bool:
    """Exact-answer verifier: the parsed answer is the decimal sum (no extra characters)."""
    return parse_answer(text) == str(problem.answer)


def is_reasoned(text: str) -> bool:
    """Does the response reason (contain ``<think>``) before it answers? The style, not the format."""
    return THINK in strip_eos(text)


def rule_reward(text: str, problem: Problem, format_weight: float = 0.1) -> float:
    """R1-Zero style reward: 1 for a correct answer, plus ``format_weight`` for the format.

    ``rule_reward(response(p), p) -> 1.1``; ``rule_reward(bare_response(p), p) -> 1.0``.
    """
    return float(is_correct(text, problem)) + format_weight * float(format_ok(text))


ENGLISH = """\
A policy maps each state to a distribution over actions. The return is the discounted sum of
the rewards that follow. The value of a state is the expected return from that state. A language
model is a policy: the state is the text so far and the action is the next token. We train the
model on text, then fine-tune it on answers, then improve it with reinforcement learning from a
reward that checks whether the answer is right and whether the format is followed. What is the
next token? The model computes attention over the tokens of the context and predicts a
probability for every token of the vocabulary.
"""
"""A little English, so that the tokenizer also learns some word pieces."""


def tokenizer_corpus(n_problems: int = 2000, seed: int = 7) -> str:
    """The text the course's BPE tokenizer is trained on: task transcripts and some English.

    Special tokens are removed (they are never merged; they get their own ids).
    """
    text = "\n".join(transcript(p) for p in sample_problems(n_problems, seed)) + "\n" + ENGLISH
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "\n")
    return text
