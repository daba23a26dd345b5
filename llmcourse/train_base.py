"""Train the course's base model (pretraining, then SFT) and ship it as a checkpoint.

    python -m llmcourse.train_base            # ~3 min on one CPU thread; writes llmcourse/data/base_model.pt

Stage 1 pretrains on a packed stream of task transcripts (next-token loss on every token).
Stage 2 fine-tunes on chat examples with the response-only loss mask. Both are seeded and run
on one CPU thread, so the run is reproducible. The command prints the checkpoint's sha256;
`llmcourse.checkpoint.BASE_MODEL_SHA256` records the shipped one. Later chapters load the
result in a second with `llmcourse.checkpoint.load_base_model`.

The run is deliberately short: the model learns the format and the easy problems but not all
of the long additions with carries, so RL has something to fix.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmcourse import taskworld as tw
from llmcourse.checkpoint import BASE_MODEL_PATH, file_sha256, save_checkpoint
from llmcourse.model import GPT, GPTConfig
from llmcourse.evaluation import evaluate
from llmcourse.sft import collate, encode_example, sft_loss
from llmcourse.tokenizer import encode, get_encoding, special_id
from llmcourse.training import TrainConfig, get_batch, next_token_loss, train


@dataclass
class BaseRecipe:
    """The base model's recipe (the shipped checkpoint was made with these defaults)."""

    seed: int = 0
    """Seed of the initialisation and of the data."""
    pretrain: TrainConfig = None  # type: ignore[assignment]
    """Stage 1: next-token loss on packed transcripts."""
    sft: TrainConfig = None  # type: ignore[assignment]
    """Stage 2: response-only SFT on chat examples."""
    n_pretrain_problems: int = 40_000
    """Problems in the pretraining stream."""
    n_sft_problems: int = 20_000
    """Problems in the SFT set."""

    def __post_init__(self):
        if self.pretrain is None:
            self.pretrain = TrainConfig(steps=455, batch_size=32, max_lr=3e-3, min_lr=3e-4, warmup_steps=50, seed=1)
        if self.sft is None:
            self.sft = TrainConfig(steps=140, batch_size=32, max_lr=1e-3, min_lr=1e-4, warmup_steps=20, seed=2)


def pretraining_stream(n_problems: int, seed: int) -> torch.Tensor:
    """(N,) long: transcripts of ``n_problems`` training problems, concatenated."""
    ids: list[int] = []
    for p in tw.sample_problems(n_problems, seed):
        ids += encode(tw.transcript(p))
    return torch.tensor(ids, dtype=torch.long)


def sft_sampler(problems: list[tw.Problem], batch_size: int, seed: int):
    """``batch(step) -> (ids, prompt_lens)``: a seeded random batch of padded SFT examples."""
    examples = [encode_example(p) for p in problems]
    pad = special_id(tw.PAD)
    gen = torch.Generator().manual_seed(seed)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        return collate([examples[i] for i in rows], pad)
    return batch


def train_base(recipe: BaseRecipe = BaseRecipe(), progress: bool = True) -> tuple[GPT, dict]:
    """Stage 1 + Stage 2; returns the model and the metrics (held-out accuracy, format rate, …)."""
    torch.manual_seed(recipe.seed)
    cfg = GPTConfig(vocab_size=get_encoding().n_vocab)
    model = GPT(cfg)
    t0 = time.perf_counter()

    # Stage 1: pretraining on the packed stream
    data = pretraining_stream(recipe.n_pretrain_problems, seed=recipe.seed + 100)
    gen = torch.Generator().manual_seed(recipe.pretrain.seed)

    def pretrain_loss(m: GPT, step: int) -> torch.Tensor:
        x, _ = get_batch(data, recipe.pretrain.batch_size, cfg.block_size, gen)
        return next_token_loss(m(x), x)
    h1 = train(model, pretrain_loss, recipe.pretrain, progress=progress, desc="pretrain")

    # Stage 2: SFT with the response-only mask
    batch = sft_sampler(tw.sample_problems(recipe.n_sft_problems, seed=recipe.seed + 200),
                        recipe.sft.batch_size, recipe.sft.seed)
    pad = special_id(tw.PAD)
    h2 = train(model, lambda m, step: sft_loss(m, *batch(step), pad), recipe.sft, progress=progress, desc="sft")

    ev = evaluate(model)
    metrics = {"accuracy": ev["accuracy"], "format_rate": ev["format_rate"],
               "pretrain_loss": sum(h1["loss"][-50:]) / 50, "sft_loss": sum(h2["loss"][-50:]) / 50,
               "seconds": time.perf_counter() - t0, "n_params": model.n_params()}
    return model, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BASE_MODEL_PATH)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--sft-steps", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible, and as fast as two threads for a model this small
    recipe = BaseRecipe()
    if args.pretrain_steps is not None:
        recipe.pretrain.steps = args.pretrain_steps
    if args.sft_steps is not None:
        recipe.sft.steps = args.sft_steps
    model, metrics = train_base(recipe)
    save_checkpoint(model, args.out, metrics={k: v for k, v in metrics.items() if k != "seconds"})
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), sha256 {file_sha256(args.out)}")


if __name__ == "__main__":
    main()
