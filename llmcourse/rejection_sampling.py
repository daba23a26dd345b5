"""Rejection-sampling fine-tuning (RFT): sample, keep what the rules call right, fine-tune on it, repeat.

The simplest way to learn from a verifier is not RL at all. Let the model answer each training problem k times,
*reject* every answer the rules do not accept, and fine-tune on the rest with plain SFT; then sample again from
the better model, and again. This is expert iteration (Anthony et al. 2017, "Thinking fast and slow with deep
learning and tree search": a slow expert's choices become a fast policy's training data), STaR (Zelikman et al.
2022, "STaR: bootstrapping reasoning with reasoning": keep the rationales that reach the right answer, fine-tune,
repeat), RFT (Yuan et al. 2023, "Scaling relationship on learning mathematical reasoning with large language
models": k samples per problem, keep the right ones with *distinct* reasoning paths, which matter more than their
number) and ReST (Gulcehre et al. 2023, "Reinforced self-training": a Grow step that samples and an Improve step
that fine-tunes on the samples a reward accepts). DeepSeek-R1 (2025, §2.3.3) uses it between its two RL stages:
about 600k reasoning samples from the RL checkpoint, kept only when right (and readable), become SFT data.

One round on the task world (`train_rft`)::

    problems (P,)  ──sample k each──▶  responses (P·k rows, prompt-major)
                   ──filter_samples──▶  kept rows: right and well-formed, distinct per problem, at most m each
                   ──examples_from_responses──▶  SFT examples (prompt + response + EOS)
                   ──finetune_on──▶  the model, fine-tuned; the next round samples from it

In RL terms it is a policy gradient with a 0/1 reward and no negative signal: the SFT loss on the kept samples is
−Σ log π(o) over the answers whose reward is 1, so the wrong ones are simply ignored rather than pushed down
(GRPO, chapter 10, also pushes them down), and the data of a round is fixed while the SFT runs (off-policy after
its first step). Its control (`selection="random"`) fine-tunes on as many samples drawn regardless of
correctness: what the filter adds beyond "more SFT on the model's own samples".

Counting the budget: a round samples ``problems_per_round × samples_per_problem`` responses; the chapter's
recipe, 2 × 320 × 8 = 5,120, is chapter 10's GRPO budget (40 updates × 16 problems × 8 samples).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.evaluation import response_stats
from llmcourse.model import GPT
from llmcourse.pretraining import TrainConfig
from llmcourse.run_log import RunLog
from llmcourse.sampling import Responses, sample_responses
from llmcourse.sft import examples_from_responses, finetune_on

SELECTIONS = ("filter", "random")
"""How a round picks its SFT rows: the rules' filter (RFT) or as many at random (the matched control)."""

RESULTS_PATH = Path(__file__).parent / "data" / "rejection_sampling.json"
"""What chapter 12 plots: the benchmark's measurements over 3 seeds (`python -m llmcourse bench --skip-notebooks
--only rejection_sampling`), read with `load_results`."""


def filter_samples(texts: Sequence[str], problems: Sequence[tw.Problem], max_per_problem: int) -> list[int]:
    """The rows to fine-tune on: right, well-formed, distinct within their problem, the first ``max_per_problem``.

    ``texts[i]`` is a response to ``problems[i]`` (row-aligned, e.g. `Responses.texts` and
    ``Responses.per_row(problems)``). Going through the rows in order, row i is kept when

    1. it is right and well-formed: ``tw.is_correct(texts[i], problems[i])`` and ``tw.format_ok(texts[i])`` (a right
       bare answer fails the format and is rejected; so is a reasoned, well-formed, wrong one);
    2. its text, up to its first end-of-text token (``tw.strip_eos``: a response is the same with or without the
       EOS that ends it), differs from every text already kept *for the same problem* (the same text for another
       problem is another example);
    3. fewer than ``max_per_problem`` rows of that problem are kept so far (rows that fail 1 or 2 do not count).

    Returns the kept row indices in increasing order (a new list; the inputs are not changed). Two responses to
    2+3 (rows 0–2) and one to 1+1 (row 3):

    >>> p, q = tw.Problem(2, 3), tw.Problem(1, 1)
    >>> right, bare = "<think>2+3=5</think><answer>5</answer>", "<answer>5</answer>"
    >>> filter_samples([bare, right, right + tw.EOS, "<think>1+1=2</think><answer>2</answer>"], [p, p, p, q], 2)
    [1, 3]
    """
    kept: list[int] = []
    seen: dict[tw.Problem, set[str]] = {}                 # problem -> texts kept for it
    for i, (text, problem) in enumerate(zip(texts, problems)):
        if not (tw.is_correct(text, problem) and tw.format_ok(text)):
            continue
        mine = seen.setdefault(problem, set())
        key = tw.strip_eos(text)
        if key in mine or len(mine) >= max_per_problem:
            continue
        mine.add(key)
        kept.append(i)
    return kept


def random_rows(n_rows: int, count: int, generator: torch.Generator) -> list[int]:
    """``count`` distinct rows of ``n_rows`` drawn uniformly (without replacement), in increasing order: the
    matched control's choice, blind to correctness."""
    return sorted(torch.randperm(n_rows, generator=generator)[:count].tolist())


def sft_config(seed: int = 0) -> TrainConfig:
    """The SFT of a round: 40 AdamW steps of 32 examples, peak lr 3e-4 (chapter 06's full fine-tuning), warmup 4
    steps, cosine to 3e-5, no weight decay."""
    return TrainConfig(steps=40, batch_size=32, max_lr=3e-4, min_lr=3e-5, warmup_steps=4, weight_decay=0.0, seed=seed)


@dataclass(frozen=True)
class RFTConfig:
    """Rejection-sampling fine-tuning on the task world; the defaults are chapter 12's recipe (`RECIPE`)."""

    rounds: int = 2
    """Sample → filter → SFT rounds."""
    problems_per_round: int = 320
    """Fresh training problems each round (never a held-out one; no problem is used twice)."""
    samples_per_problem: int = 8
    """k: responses sampled per problem. Budget: rounds × problems_per_round × k = 5,120 sampled responses, GRPO's."""
    max_per_problem: int = 4
    """m: at most this many distinct right responses kept per problem (RFT's distinct reasoning paths)."""
    temperature: float = 1.0
    """Sampling temperature (1: the model's own distribution, diverse enough to find the right answers)."""
    max_new_tokens: int = 48
    """Token budget of a response."""
    sft: TrainConfig = field(default_factory=sft_config)
    """The SFT of each round (its seed is replaced by one derived from ``seed`` and the round)."""
    restart: bool = False
    """False: each round fine-tunes the current model on that round's kept samples (expert iteration, ReST).
    True: each round fine-tunes the *starting* model on everything kept so far (STaR)."""
    selection: str = "filter"
    """"filter": `filter_samples` (RFT). "random": the matched control, as many rows as the filter would keep from
    the same samples, drawn regardless of correctness (`random_rows`)."""
    seed: int = 0
    """Seed of the training problems, of the sampling, of the control's draw and of the SFT batches."""


RECIPE = RFTConfig()
"""Chapter 12's run: 2 rounds × 320 problems × 8 samples (5,120 responses, GRPO's budget), m = 4, 40 SFT steps of 32
at lr 3e-4 per round, each round continuing from the last."""

CONTROL = replace(RECIPE, selection="random")
"""The matched control: the same samples' budget and SFT, random rows instead of the filter's."""

DEMO = replace(RECIPE, rounds=1, problems_per_round=64)
"""A round a notebook can run live in seconds: 64 problems × 8 samples, the recipe's filter and SFT."""


def select_rows(r: Responses, problems: Sequence[tw.Problem], cfg: RFTConfig, generator: torch.Generator) -> list[int]:
    """The rows of a round's responses to fine-tune on: the filter's, or (control) as many drawn at random."""
    kept = filter_samples(r.texts, r.per_row(problems), cfg.max_per_problem)
    if cfg.selection == "filter":
        return kept
    if cfg.selection == "random":
        return random_rows(len(r), len(kept), generator)
    raise ValueError(f"unknown selection {cfg.selection!r}; use one of {SELECTIONS}")


def train_rft(model: GPT, cfg: RFTConfig, on_eval: Callable[[int, GPT], None] | None = None,
              progress: bool = False) -> dict[str, list[float]]:
    """Rejection-sampling fine-tuning of ``model`` in place: ``cfg.rounds`` rounds of sample → select → SFT.

    ``on_eval(round, model)`` runs before the first round and after each (``round`` = rounds done; its time is not
    counted). Returns one value per round: ``sampled`` (responses sampled), ``kept`` (rows selected),
    ``kept_problems`` (problems with at least one), ``examples`` (SFT examples of the round: the kept rows, or with
    ``restart`` all kept so far), ``sample_accuracy`` / ``sample_format_rate`` / ``sample_reasoned`` (of the
    round's samples, by the rules), ``kept_accuracy`` (share of the selected rows that are right: 1 for the
    filter), ``sft_loss`` (mean of the round's last 5 SFT steps); and ``seconds`` (training time, sampling
    included, evaluations not).
    """
    if cfg.selection not in SELECTIONS:
        raise ValueError(f"unknown selection {cfg.selection!r}; use one of {SELECTIONS}")
    device = next(model.parameters()).device
    problems = tw.sample_problems(cfg.rounds * cfg.problems_per_round, seed=12_000 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)          # the sampling
    draw = torch.Generator().manual_seed(cfg.seed)                       # the control's rows
    start = copy.deepcopy(model.state_dict()) if cfg.restart else None   # the model every round restarts from
    pool: list[tuple[list[int], int]] = []                               # all kept examples so far (restart)
    log = RunLog(model, on_eval)
    log.evaluate(0)
    for rnd in tqdm(range(cfg.rounds), desc="RFT rounds", disable=not progress):
        batch = problems[rnd * cfg.problems_per_round:(rnd + 1) * cfg.problems_per_round]
        # Stage 1: sample k responses per problem from the current model
        model.eval()
        r = sample_responses(model, batch, cfg.samples_per_problem, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, generator=gen)
        rows_problems = r.per_row(batch)
        # Stage 2: keep what the rules accept (or, the control, as many at random)
        rows = select_rows(r, batch, cfg, draw)
        examples = examples_from_responses(r, rows)
        # Stage 3: SFT on them: the current model on this round's, or the starting model on all so far
        if cfg.restart:
            pool += examples
            examples = pool
            model.load_state_dict(start)
        sft = replace(cfg.sft, seed=1_000 * cfg.seed + rnd)
        history = finetune_on(model, examples, sft, desc=f"SFT round {rnd + 1}") if examples else {"loss": []}
        model.eval()
        stats = response_stats(r.texts, rows_problems)
        losses = history["loss"][-5:]
        log.add(sampled=len(r), kept=len(rows), kept_problems=len({rows_problems[i] for i in rows}),
                examples=len(examples), sample_accuracy=stats["accuracy"], sample_format_rate=stats["format_rate"],
                sample_reasoned=stats["reasoned_share"],
                kept_accuracy=sum(tw.is_correct(r.texts[i], rows_problems[i]) for i in rows) / max(1, len(rows)),
                sft_loss=sum(losses) / len(losses) if losses else float("nan"))
        log.evaluate(rnd + 1)
    return log.finish()


def rft_run(cfg: RFTConfig = RECIPE, seed: int = 0, device: str | torch.device = "cpu",
            on_eval: Callable[[int, GPT], None] | None = None) -> tuple[GPT, dict[str, list[float]]]:
    """A fresh copy of the shipped base model trained with ``cfg`` for ``seed`` (torch's global seed set too): the
    model and `train_rft`'s history. What the benchmark runs for the recipe and its control."""
    from llmcourse.checkpoint import load_base_model                   # the shipped model (chapter 05)
    torch.manual_seed(seed)
    model = load_base_model(device)
    history = train_rft(model, replace(cfg, seed=seed), on_eval=on_eval)
    return model, history


def load_results(path: Path = RESULTS_PATH) -> dict:
    """The measurements of chapter 12's benchmark (RFT by round, its control, GRPO, the R1 pipeline; 3 seeds)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
