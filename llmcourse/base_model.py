"""Train the course's base model (pretraining, then SFT) and ship it as a checkpoint.

    python -m llmcourse.base_model            # ~5 min on one CPU thread; writes llmcourse/data/base_model.pt
    python -m llmcourse.base_model --student  # chapter 12's smaller student, same data; writes data/student_model.pt

Stage 1 pretrains on a packed stream of task transcripts (next-token loss on every token).
Stage 2 fine-tunes on chat examples with the response-only loss mask. Both are seeded and run
on one CPU thread, so the run is reproducible. The command prints the checkpoint's sha256;
`llmcourse.checkpoint.BASE_MODEL_SHA256` records the shipped one. Later chapters load the
result in a second with `llmcourse.checkpoint.load_base_model`.

The data mix two response styles (`llmcourse.taskworld`): the reasoned one (column sums, then
the answer) and the bare answer. The pretraining stream is mostly worked solutions (70%), which
teaches the model to add well *when it reasons*; the SFT set is mostly bare answers (75%), which
sets the style it picks first. So the base model usually answers at once and is then often
wrong on long sums: RL can move it to the behaviour it already has and that earns more reward,
within a minute. (Other mixes fail, measured: with 30% worked solutions in pretraining the reasoned
answers were right only 59% of the time; with half and half and 2,000 pretraining steps the
model learned to add in its head, right 53% of the time without reasoning, which leaves RL
little to do.) The evaluation stored in the checkpoint (`llmcourse.evaluation`)
says how often it reasons and how right it is in each style.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import BASE_MODEL_PATH, STUDENT_MODEL_PATH, file_sha256, save_checkpoint
from llmcourse.evaluation import evaluate
from llmcourse.model import GPT, GPTConfig
from llmcourse.pretraining import TrainConfig, get_batch, next_token_loss, pretraining_stream, train
from llmcourse.sft import finetune
from llmcourse.tokenizer import get_encoding

@dataclass
class BaseRecipe:
    """The base model's recipe (the shipped checkpoint was made with these defaults)."""

    seed: int = 0
    """Seed of the initialisation and of the data."""
    model: GPTConfig = field(default_factory=GPTConfig)
    """The model's shape (its vocabulary is always the course tokenizer's)."""
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1400, batch_size=32, max_lr=3e-3, min_lr=3e-4, warmup_steps=50, seed=1))
    """Stage 1: next-token loss on packed transcripts."""
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, batch_size=32, max_lr=1e-3, min_lr=1e-4, warmup_steps=20, seed=2))
    """Stage 2: response-only SFT on chat examples."""
    n_pretrain_problems: int = 60_000
    """Problems in the pretraining stream."""
    n_sft_problems: int = 20_000
    """Problems in the SFT set."""
    pretrain_reasoned_share: float = 0.7
    """Share of pretraining documents whose response is reasoned (the others are bare answers)."""
    sft_reasoned_share: float = 0.25
    """Share of SFT examples whose response is reasoned: the style the model picks first is set here."""


STUDENT_RECIPE = BaseRecipe(model=GPTConfig(n_layer=4, n_head=4, n_embd=64))
"""Chapter 12's student: the base model's data and schedule on a GPT of half the width (227,200 parameters, 27% of
the base model's 847,616; the blocks' weights scale with the width squared). As deep, with as many heads, each half
as wide: depth is what carries a carry from column to column, so width is what is cut. Shipped as
``data/student_model.pt`` (``python -m llmcourse.base_model --student``, ~4 min on one thread). Measured (held-out,
4 samples at temperature 1): it can add when it reasons, less surely than the base model (reasoned answers right
74%, base model 91–93%), and like it usually answers bare (27% reasoned): sampled accuracy 27.8%, greedy 16.0%."""


def pretrain(model: GPT, recipe: BaseRecipe, progress: bool = True) -> dict[str, list[float]]:
    """Stage 1: next-token loss on random windows of the packed, mixed-style stream."""
    data = pretraining_stream(recipe.n_pretrain_problems, seed=recipe.seed + 100,
                              reasoned_share=recipe.pretrain_reasoned_share)
    gen = torch.Generator().manual_seed(recipe.pretrain.seed)

    def pretrain_loss(m: GPT, step: int) -> torch.Tensor:
        x, _ = get_batch(data, recipe.pretrain.batch_size, m.cfg.block_size, gen)
        return next_token_loss(m(x), x)
    return train(model, pretrain_loss, recipe.pretrain, progress=progress, desc="pretrain")


def train_base(recipe: BaseRecipe = BaseRecipe(), progress: bool = True) -> tuple[GPT, dict]:
    """Stage 1 (pretraining) + Stage 2 (SFT, `llmcourse.sft.finetune`); returns the model and its metrics
    (`llmcourse.evaluation.evaluate`, losses, size)."""
    torch.manual_seed(recipe.seed)
    model = GPT(replace(recipe.model, vocab_size=get_encoding().n_vocab))
    t0 = time.perf_counter()
    h1 = pretrain(model, recipe, progress)
    h2 = finetune(model, tw.sample_problems(recipe.n_sft_problems, seed=recipe.seed + 200), recipe.sft,
                  reasoned_share=recipe.sft_reasoned_share, progress=progress)
    seconds = time.perf_counter() - t0
    metrics = {k: v for k, v in evaluate(model).items() if isinstance(v, (int, float, dict))}
    metrics.update(pretrain_loss=sum(h1["loss"][-50:]) / 50, sft_loss=sum(h2["loss"][-50:]) / 50,
                   seconds=seconds, n_params=model.n_params())
    return model, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", action="store_true",
                        help="train chapter 12's student (STUDENT_RECIPE) instead of the base model")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--pretrain-reasoned-share", type=float, default=None)
    parser.add_argument("--sft-reasoned-share", type=float, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible, and as fast as two threads for a model this small
    recipe = copy.deepcopy(STUDENT_RECIPE) if args.student else BaseRecipe()
    args.out = args.out or (STUDENT_MODEL_PATH if args.student else BASE_MODEL_PATH)
    if args.pretrain_steps is not None:
        recipe.pretrain.steps = args.pretrain_steps
    if args.sft_steps is not None:
        recipe.sft.steps = args.sft_steps
    if args.pretrain_reasoned_share is not None:
        recipe.pretrain_reasoned_share = args.pretrain_reasoned_share
    if args.sft_reasoned_share is not None:
        recipe.sft_reasoned_share = args.sft_reasoned_share
    model, metrics = train_base(recipe)
    save_checkpoint(model, args.out, metrics={k: v for k, v in metrics.items() if k != "seconds"})
    for k, v in metrics.items():
        print(f"{k}: {round(v, 4) if isinstance(v, float) else v}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), sha256 {file_sha256(args.out)}")


if __name__ == "__main__":
    main()
